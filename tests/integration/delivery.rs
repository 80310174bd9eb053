//! From a signed delivery to the handler: typed methods, the fallback, strict mode, failures,
//! duplicates.

use meet_webhooks::WEBHOOKS;
use meet_webhooks_runtime::Unmatched;
use meet_webhooks_sender::{Sender, Signing, provider_bytes};
use serde_json::json;

use crate::common::{Call, KEY, Options, TestServer, block_on, example, now_ms};

#[test]
fn every_webhook_of_the_spec_reaches_its_typed_method_as_the_provider_sends_it() {
    let server = TestServer::start();
    let sender = Sender::new(&server.url(), Signing::new(KEY)).unwrap();
    assert!(!WEBHOOKS.is_empty());
    for webhook in WEBHOOKS {
        let delivered = block_on(sender.send(provider_bytes(&example(webhook)))).unwrap();
        assert_eq!(delivered.status.as_u16(), 200, "{}: {}", webhook.event, delivered.body);
        // The receiver's answer, read whatever the spec declares for the response.
        assert!(delivered.body.starts_with("{\"status\":"), "{}: {}", webhook.event, delivered.body);
    }
    let reached: Vec<&str> = server
        .recorder()
        .calls()
        .into_iter()
        .map(|call| match call {
            Call::Typed { operation_id, .. } => operation_id,
            other => panic!("expected typed calls only, got {other:?}"),
        })
        .collect();
    let expected: Vec<&str> = WEBHOOKS.iter().map(|w| w.operation_id).collect();
    assert_eq!(reached, expected);
}

#[test]
fn the_providers_test_event_is_acknowledged_and_goes_to_the_fallback() {
    let server = TestServer::start();
    let sender = Sender::new(&server.url(), Signing::new(KEY)).unwrap();
    let body = json!({"event": "testEvent", "creationDate": now_ms(), "data": {"message": "hello"}});
    let delivered = block_on(sender.send(body.to_string().into_bytes())).unwrap();
    assert_eq!(delivered.status.as_u16(), 200, "{}", delivered.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&delivered.body).unwrap(), json!({"status": "fallback"}));
    assert_eq!(
        server.recorder().calls(),
        [Call::Fallback { event: Some("testEvent".into()), reason: Unmatched::UnknownEvent }]
    );
}

fn deliver_json(server: &TestServer, body: &serde_json::Value) -> crate::common::Response {
    server.deliver(KEY, &now_ms().to_string(), body.to_string().as_bytes())
}

#[test]
fn an_event_the_spec_does_not_know_goes_to_the_fallback() {
    let server = TestServer::start();
    let response =
        deliver_json(&server, &json!({"event": "roomDeleted", "creationDate": now_ms(), "data": {"roomId": "r"}}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        server.recorder().calls(),
        [Call::Fallback { event: Some("roomDeleted".into()), reason: Unmatched::UnknownEvent }]
    );
}

#[test]
fn a_body_without_an_event_name_goes_to_the_fallback() {
    let server = TestServer::start();
    let response = deliver_json(&server, &json!({"creationDate": now_ms(), "data": {}}));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(server.recorder().calls(), [Call::Fallback { event: None, reason: Unmatched::NoEventName }]);
}

#[test]
fn a_body_that_does_not_fit_its_type_goes_to_the_fallback_with_the_field_path() {
    let server = TestServer::start();
    let webhook = &WEBHOOKS[0];
    let mut body = example(webhook);
    body["creationDate"] = json!("yesterday");
    let response = deliver_json(&server, &body);
    assert_eq!(response.status, 200, "{response:?}");
    let calls = server.recorder().calls();
    let [Call::Fallback { event, reason: Unmatched::Mismatch { path, message } }] = calls.as_slice() else {
        panic!("expected one fallback, got {calls:?}");
    };
    assert_eq!(event.as_deref(), Some(webhook.event));
    assert_eq!(path, "creationDate");
    // Why, without the value: the provider's data stays out of logs.
    assert!(message.starts_with("invalid type: a string, expected f64"), "{message}");
    assert!(!message.contains("yesterday"), "{message}");
}

#[test]
fn a_status_the_spec_does_not_list_is_never_lost() {
    // Where the spec types `data.status` as an enum (the later specs), a new value goes to the
    // fallback naming `data.status`; where it is a plain string (the seed), it stays typed.
    let server = TestServer::start();
    let webhooks: Vec<_> = WEBHOOKS.iter().filter(|w| example(w)["data"]["status"].is_string()).collect();
    assert!(!webhooks.is_empty(), "every spec has a recording webhook with a status");
    for webhook in &webhooks {
        let mut body = example(webhook);
        body["data"]["status"] = json!("paused_by_a_future_provider");
        let typed = meet_webhooks::Event::parse(webhook.event, body.to_string().as_bytes()).is_ok();
        let response = deliver_json(&server, &body);
        assert_eq!(response.status, 200, "{response:?}");
        let last = server.recorder().calls().pop().unwrap();
        if typed {
            assert_eq!(
                last,
                Call::Typed { operation_id: webhook.operation_id, delivery_id: delivery_id_of(&last), attempt: 1 }
            );
        } else {
            let Call::Fallback { reason: Unmatched::Mismatch { path, .. }, .. } = &last else { panic!("{last:?}") };
            assert_eq!(path, "data.status");
        }
    }
}

fn delivery_id_of(call: &Call) -> String {
    match call {
        Call::Typed { delivery_id, .. } => delivery_id.clone(),
        Call::Fallback { .. } => String::new(),
    }
}

#[test]
fn fields_the_spec_does_not_list_are_ignored() {
    let server = TestServer::start();
    let webhook = &WEBHOOKS[0];
    let mut body = example(webhook);
    body["encoding"] = json!({"preset": "H264_720P_30"});
    body["data"]["errorCode"] = json!(7);
    let response = deliver_json(&server, &body);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        matches!(server.recorder().calls().as_slice(), [Call::Typed { operation_id, .. }] if *operation_id == webhook.operation_id)
    );
}

#[test]
fn strict_mode_refuses_what_matches_no_typed_webhook_with_422() {
    let server = TestServer::with(Options { strict: true, ..Options::default() });
    let response = deliver_json(&server, &json!({"event": "testEvent", "creationDate": now_ms(), "data": {}}));
    assert_eq!(response.status, 422, "{response:?}");
    assert_eq!(response.error(), "unmatched_event");
    assert!(response.json()["message"].as_str().unwrap().contains("no webhook of this name"));
    let response = deliver_json(&server, &example(&WEBHOOKS[0]));
    assert_eq!(response.status, 200, "typed deliveries are still handled: {response:?}");
    assert_eq!(server.recorder().calls().len(), 1, "the refused delivery never reached the handler");
}

#[test]
fn a_signed_body_that_is_not_json_is_refused_with_400() {
    let server = TestServer::start();
    let response = server.deliver(KEY, &now_ms().to_string(), b"event=recordingStarted");
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(response.error(), "invalid_json");
    assert!(server.recorder().calls().is_empty());
}

#[test]
fn a_failing_handler_gets_500_so_the_provider_retries_and_the_retry_is_handled() {
    let server = TestServer::start();
    server.recorder().failures_left.store(1, std::sync::atomic::Ordering::SeqCst);
    let (timestamp, body) = (now_ms().to_string(), example(&WEBHOOKS[0]).to_string());
    let first = server.deliver(KEY, &timestamp, body.as_bytes());
    assert_eq!(first.status, 500, "{first:?}");
    assert_eq!(first.error(), "handler_failed");
    // The provider's retry: identical timestamp, body and signature.
    let retry = server.deliver(KEY, &timestamp, body.as_bytes());
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.json()["status"], "handled");
    let again = server.deliver(KEY, &timestamp, body.as_bytes());
    assert_eq!(again.json()["status"], "duplicate");
    let calls = server.recorder().calls();
    assert_eq!(calls.len(), 2, "failed once, handled once: {calls:?}");
    assert_eq!(calls[0], calls[1], "the retry carries the same delivery id");
}

#[test]
fn the_same_delivery_twice_is_acknowledged_twice_and_handled_once() {
    let server = TestServer::start();
    let (timestamp, body) = (now_ms().to_string(), example(&WEBHOOKS[0]).to_string());
    let first = server.deliver(KEY, &timestamp, body.as_bytes());
    let second = server.deliver(KEY, &timestamp, body.as_bytes());
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.json()["status"], "handled");
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(server.recorder().calls().len(), 1);
    // A new delivery with the same body but a new timestamp is a new event.
    let later = server.deliver(KEY, &(now_ms() + 1).to_string(), body.as_bytes());
    assert_eq!(later.json()["status"], "handled");
    assert_eq!(server.recorder().calls().len(), 2);
}

#[test]
#[allow(irrefutable_let_patterns)] // the seed spec has one webhook only
fn the_services_own_handler_handles_recording_started_of_every_spec_version() {
    use meet_webhooks::handler::{RecordingSummary, ServiceHandler};
    let webhook = WEBHOOKS.iter().find(|w| w.event == "recordingStarted").expect("every spec has recordingStarted");
    let body = example(webhook);
    let meet_webhooks::Event::RecordingStartedWebhook(typed) =
        meet_webhooks::Event::parse(webhook.event, body.to_string().as_bytes()).unwrap()
    else {
        panic!("recordingStarted parses as itself")
    };
    let bytes = body.to_string();
    let summary = RecordingSummary::of((*typed).clone());
    assert_eq!(summary.recording_id, body["data"]["recordingId"].as_str().unwrap());
    assert_eq!(summary.room_id, body["data"]["roomId"].as_str().unwrap());
    assert_eq!(summary.status, body["data"]["status"].as_str().unwrap());
    let ctx = meet_webhooks_runtime::DeliveryContext {
        delivery_id: "d".into(),
        attempt: 1,
        timestamp_ms: now_ms(),
        received_at: std::time::SystemTime::now(),
        queued_at: std::time::SystemTime::now(),
        event: Some(webhook.event.into()),
        body: bytes.into(),
        creation_date: None,
        later_in_room: None,
        later_in_recording: None,
    };
    block_on(meet_webhooks::generated::dispatch(
        &ServiceHandler::default(),
        &ctx,
        meet_webhooks::Event::RecordingStartedWebhook(typed),
    ))
    .unwrap();
}

#[test]
fn a_full_replay_cache_answers_503_and_still_knows_its_duplicates() {
    let server = TestServer::with(Options { replay_capacity: 2, ..Options::default() });
    let body = example(&WEBHOOKS[0]).to_string();
    let timestamps: Vec<String> = (0..3).map(|n| (now_ms() + n).to_string()).collect();
    for timestamp in &timestamps[..2] {
        assert_eq!(server.deliver(KEY, timestamp, body.as_bytes()).json()["status"], "handled");
    }
    // A third delivery would push out a remembered one: refused, so the provider retries it.
    let third = server.deliver(KEY, &timestamps[2], body.as_bytes());
    assert_eq!((third.status, third.error().as_str()), (503, "busy"), "{third:?}");
    assert!(third.json()["message"].as_str().unwrap().contains("--replay-capacity"), "{third:?}");
    // The remembered ones are still duplicates, and nothing was handled twice.
    assert_eq!(server.deliver(KEY, &timestamps[0], body.as_bytes()).json()["status"], "duplicate");
    assert_eq!(server.recorder().calls().len(), 2);
}
