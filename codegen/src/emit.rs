//! From the bundled document to Rust: progenitor makes the types; we add what
//! progenitor has no notion of, the receiving side: a handler trait with one method per webhook,
//! an `Event` enum that the `event` field selects, and a dispatcher.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use progenitor::{GenerationSettings, Generator};
use quote::{format_ident, quote};
use serde_json::Value;

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::example::example;

/// What progenitor made of the bundle.
pub(crate) struct Progenitor {
    /// The types alone.
    pub types: TokenStream,
    /// The REST client (its `Client` and one method per operation), without the types; `None`
    /// when the spec has no `paths:`.
    pub client: Option<TokenStream>,
    /// The request body type of each operation, by operationId.
    pub body_types: HashMap<String, syn::Type>,
    /// Every type typify defined (structs, enums, newtypes), by name.
    pub type_names: Vec<String>,
}

/// Adds `call()` to a builder whose `send()` returns `Result<ResponseValue<T>, Error<E>>`: the
/// same call, its error an `ApiError` that names the operation, the status and the API's error.
fn add_call(block: &mut syn::ItemImpl, bundle: &Bundle, rt: &syn::Path) {
    let send = block.items.iter().find_map(|item| match item {
        syn::ImplItem::Fn(f) if f.sig.ident == "send" => Some(f),
        _ => None,
    });
    let Some(syn::ReturnType::Type(_, output)) = send.map(|f| &f.sig.output) else { return };
    let syn::Type::Path(output) = &**output else { return };
    let Some(syn::PathArguments::AngleBracketed(arguments)) = output.path.segments.last().map(|s| &s.arguments) else {
        return;
    };
    let Some(syn::GenericArgument::Type(ok)) = arguments.args.first() else { return };
    let syn::Type::Path(builder) = &*block.self_ty else { return };
    let Some(name) = builder.path.segments.last().map(|s| s.ident.to_string()) else { return };
    let operation = bundle
        .operations
        .iter()
        .map(|o| o.operation_id.as_str())
        .find(|id| id.to_upper_camel_case() == name)
        .unwrap_or(&name)
        .to_owned();
    let doc = format!(
        " [`send`](Self::send), its error naming the operation (`{operation}`), the status and the API's error body."
    );
    block.items.push(syn::parse_quote! {
        #[doc = #doc]
        pub async fn call(self) -> ::std::result::Result<#ok, #rt::meet::ApiError> {
            self.send().await.map_err(|e| #rt::meet::ApiError::new(#operation, e))
        }
    });
}

/// What the generated client carries for its hooks (the retry policy), as the runtime names it.
fn client_inner(runtime: &syn::Path) -> TokenStream {
    quote!(#runtime::meet::Settings)
}

/// Runs progenitor on the bundle. A REST path it cannot generate is taken out of the bundle
/// with a warning naming it, and progenitor runs again: the webhooks must build whatever the
/// REST part holds. A schema it cannot generate is an error at its file and pointer.
pub(crate) fn run_progenitor(bundle: &mut Bundle, spec: &Path, runtime: &syn::Path) -> Result<Progenitor> {
    loop {
        let document = parse_openapi(bundle)?;
        let mut settings = GenerationSettings::new();
        let has_paths = document.paths.paths.iter().next().is_some();
        if has_paths {
            // Builder calls (`client.get_room().room_id(id).send()`): a parameter the provider
            // adds later does not break a call that compiled before.
            settings
                .with_interface(progenitor::InterfaceStyle::Builder)
                .with_hooks(progenitor::HooksMode::Expected)
                .with_inner_type(client_inner(runtime));
        }

        // typify panics on some inputs instead of returning an error. A build error must name
        // the spec and say what is wrong, not print a backtrace from inside a dependency.
        let outcome = quietly(|| {
            let mut generator = Generator::new(&settings);
            let client = generator.generate_tokens(&document)?;
            let space = generator.get_type_space();
            // The types typify defined for the spec (not `Option<String>` and the like): each
            // component of the bundle is one, the bodies among them.
            let names: Vec<String> = space
                .iter_types()
                .filter(|t| {
                    use typify::TypeDetails;
                    matches!(t.details(), TypeDetails::Struct(_) | TypeDetails::Enum(_) | TypeDetails::Newtype(_))
                })
                .map(|t| t.name())
                .collect();
            Ok::<_, progenitor::Error>((client, space.to_stream(), names))
        });

        let failure = match outcome {
            Ok(Ok((client, types, mut type_names))) => {
                type_names.sort();
                let body_types = body_types(bundle, &type_names, spec)?;
                let client = if has_paths { Some(without_types(client, spec, bundle, runtime)?) } else { None };
                return Ok(Progenitor { types, client, body_types, type_names });
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown panic".to_owned());
                // The first line says what; the rest is typify's debug dump of the schema.
                format!("it panicked: {}", message.lines().next().unwrap_or_default().trim_end_matches(['(', ' ']))
            }
        };
        match locate_failure(bundle) {
            Some(Failure::Path(path, at)) => {
                bundle.drop_path(&path);
                bundle.warnings.push(crate::error::Warning {
                    at,
                    message: format!(
                        "the client has no operations for `{path}`: progenitor could not generate them: {failure}"
                    ),
                });
            }
            Some(Failure::Schema(at)) => {
                return Err(Error::Unsupported {
                    at,
                    message: format!("progenitor could not generate code for this schema: {failure}"),
                });
            }
            None => return Err(Error::Progenitor { spec: spec.to_path_buf(), message: failure }),
        }
    }
}

/// progenitor's client without its `types` module: the generated module has one `types` for
/// the webhooks and the client alike, so that a webhook's `data` and an operation's answer are
/// one Rust type. Each builder gets `call()` beside progenitor's `send()`.
fn without_types(client: TokenStream, spec: &Path, bundle: &Bundle, runtime: &syn::Path) -> Result<TokenStream> {
    let mut file: syn::File = syn::parse2(client).map_err(|e| Error::Progenitor {
        spec: spec.to_path_buf(),
        message: format!("progenitor's client does not parse: {e}"),
    })?;
    file.items.retain(|item| !matches!(item, syn::Item::Mod(m) if m.ident == "types"));
    for item in &mut file.items {
        if let syn::Item::Mod(module) = item
            && module.ident == "builder"
            && let Some((_, items)) = &mut module.content
        {
            for item in items.iter_mut() {
                if let syn::Item::Impl(block) = item {
                    add_call(block, bundle, runtime);
                }
            }
        }
    }
    let items = &file.items;
    Ok(quote! {
        pub use super::types;
        #(#items)*
    })
}

thread_local! {
    /// Whether a panic on this thread is caught and reported as a build error.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without printing it. The panic hook is wrapped once, for good,
/// and stays silent only on the thread inside `quietly`: swapping the hook in and out would
/// silence (or unsilence) panics of other threads running at the same time, such as tests.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAPPED: std::sync::Once = std::sync::Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|quiet| quiet.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|quiet| quiet.set(false));
    outcome
}

/// Where progenitor failed.
enum Failure {
    /// A component: the spec's error.
    Schema(crate::error::Location),
    /// A REST path (its key in `paths:`), whose schemas alone generate.
    Path(String, crate::error::Location),
}

/// Which schema progenitor failed (or panicked) on: each component alone (the others stubbed
/// with `{}`, so references still resolve), then each REST path alone. Only runs after a
/// failure.
fn locate_failure(bundle: &Bundle) -> Option<Failure> {
    let panics = |document: Value| {
        let Ok(document) = serde_json::from_value::<openapiv3::OpenAPI>(document) else {
            return false;
        };
        !matches!(
            quietly(|| Generator::new(&GenerationSettings::new()).generate_tokens(&document).map(|_| ())),
            Ok(Ok(()))
        )
    };
    let schemas = bundle.document.pointer("/components/schemas").and_then(Value::as_object)?;
    let stubbed: serde_json::Map<String, Value> = schemas.keys().map(|k| (k.clone(), serde_json::json!({}))).collect();
    for (name, schema) in schemas {
        let mut only = stubbed.clone();
        only.insert(name.clone(), schema.clone());
        let mut document = bundle.document.clone();
        document["paths"] = serde_json::json!({});
        document["components"]["schemas"] = Value::Object(only);
        if panics(document) {
            return Some(Failure::Schema(
                bundle.origin_of(&format!("/components/schemas/{}", name.replace('~', "~0").replace('/', "~1"))),
            ));
        }
    }
    let paths = bundle.document.get("paths").and_then(Value::as_object)?;
    for (path, item) in paths {
        let mut document = bundle.document.clone();
        document["paths"] = serde_json::json!({ path: item });
        document["components"]["schemas"] = Value::Object(stubbed.clone());
        if panics(document) {
            let at = bundle.origin_of(&format!("/paths/{}", path.replace('~', "~0").replace('/', "~1")));
            return Some(Failure::Path(path.clone(), at));
        }
    }
    None
}

/// Parses the bundled document with openapiv3; a failure is reported at the user's file.
fn parse_openapi(bundle: &Bundle) -> Result<openapiv3::OpenAPI> {
    serde_path_to_error::deserialize(bundle.document.clone()).map_err(|e| {
        let mut pointer = String::new();
        for segment in e.path().iter() {
            use serde_path_to_error::Segment;
            let part = match segment {
                Segment::Seq { index } => index.to_string(),
                Segment::Map { key } => key.replace('~', "~0").replace('/', "~1"),
                Segment::Enum { variant } => variant.clone(),
                Segment::Unknown => continue,
            };
            pointer.push('/');
            pointer.push_str(&part);
        }
        Error::Invalid { at: bundle.origin_of(&pointer), message: e.inner().to_string() }
    })
}

/// Each webhook's body type: the component the bundle made of its body, as typify made it
/// (`types::RecordingStartedWebhookBody`), or any JSON. A component typify made no type for is
/// an error here, not a compile error in the user's build.
fn body_types(bundle: &Bundle, type_names: &[String], spec: &Path) -> Result<HashMap<String, syn::Type>> {
    let mut out = HashMap::new();
    for webhook in &bundle.webhooks {
        let ty: syn::Type = match &webhook.body_component {
            None => syn::parse_quote!(::serde_json::Value),
            Some(name) => {
                if type_names.binary_search(name).is_err() {
                    return Err(Error::Progenitor {
                        spec: spec.to_path_buf(),
                        message: format!(
                            "typify made no type `{name}` for the body of webhook {:?} (at {})",
                            webhook.event, webhook.location
                        ),
                    });
                }
                let ident = format_ident!("{}", name);
                syn::parse_quote!(types::#ident)
            }
        };
        out.insert(webhook.operation_id.clone(), ty);
    }
    Ok(out)
}

pub(crate) use crate::bundle::method_name;

/// The `client` module: progenitor's client for the REST API, its calls going through the
/// runtime (the API key on every request, retries of `429`/`503`); without `paths:`, a `Client`
/// with no operations, so that a handler that holds one builds whatever the spec.
fn client_module(bundle: &Bundle, generated: &Progenitor, rt: &syn::Path) -> TokenStream {
    let title = bundle.document.pointer("/info/title").and_then(Value::as_str).unwrap_or_default();
    let Some(client) = &generated.client else {
        return quote! {
            /// The REST API's client: none, the spec has no `paths:`.
            #[allow(dead_code, clippy::all, clippy::pedantic)]
            pub mod client {
                /// A client with no operations: the spec this module was generated from has no
                /// `paths:`.
                #[derive(Debug, Clone)]
                pub struct Client {
                    settings: #rt::meet::Settings,
                }

                impl Client {
                    /// A client for `settings` (it has no operations).
                    pub fn from_settings(settings: &#rt::meet::Settings) -> Self {
                        Self { settings: settings.clone() }
                    }

                    /// Where it would send its calls.
                    pub fn baseurl(&self) -> &str {
                        self.settings.url()
                    }
                }
            }
        };
    };
    let client = reroot(client.clone(), &["reqwest", "progenitor_client"], &syn::parse_quote!(#rt::__private));
    let doc =
        format!(" The {title} client, generated by progenitor from the spec's `paths:`: one method per operation.");
    quote! {
        #[doc = #doc]
        ///
        /// Build it with [`Client::from_settings`]: the base URL and API key of a deployment
        /// (`https://<host>/meet/api/v1`), sent as `X-API-KEY` on every call.
        #[allow(dead_code, unused_imports, clippy::all, clippy::pedantic)]
        pub mod client {
            #client

            impl #rt::__private::progenitor_client::ClientHooks<#rt::meet::Settings> for Client {
                async fn exec(
                    &self,
                    request: #rt::__private::reqwest::Request,
                    info: &#rt::__private::progenitor_client::OperationInfo,
                ) -> #rt::__private::reqwest::Result<#rt::__private::reqwest::Response> {
                    #rt::meet::execute(#rt::__private::progenitor_client::ClientInfo::inner(self), request, info.operation_id).await
                }
            }

            impl Client {
                /// A client for the deployment `settings` names.
                pub fn from_settings(settings: &#rt::meet::Settings) -> Self {
                    Self::new_with_client(settings.url(), settings.http().clone(), settings.clone())
                }
            }
        }
    }
}

/// Makes paths that start at one of the crates `names` start at `to` instead (`reqwest::Request`
/// → `::meet_webhooks_runtime::__private::reqwest::Request`): the including crate then needs
/// no dependency of its own on them.
fn reroot(tokens: TokenStream, names: &[&str], to: &syn::Path) -> TokenStream {
    use proc_macro2::{Group, Punct, Spacing, TokenTree};
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out: Vec<TokenTree> = Vec::with_capacity(trees.len());
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => {
                let mut rerooted = Group::new(group.delimiter(), reroot(group.stream(), names, to));
                rerooted.set_span(group.span());
                out.push(TokenTree::Group(rerooted));
            }
            TokenTree::Ident(ident) if names.iter().any(|n| ident == n) => {
                let followed_by_path = matches!(trees.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':');
                // `a::reqwest` is someone else's `reqwest`; `::reqwest` and `reqwest` start a path.
                let colons_before = i >= 2
                    && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == ':')
                    && matches!(&trees[i - 2], TokenTree::Punct(p) if p.as_char() == ':');
                const KEYWORDS: [&str; 12] =
                    ["use", "as", "in", "for", "impl", "dyn", "return", "mut", "pub", "where", "let", "move"];
                let segment_before = colons_before
                    && i >= 3
                    && match &trees[i - 3] {
                        TokenTree::Ident(before) => !KEYWORDS.iter().any(|k| before == k),
                        TokenTree::Punct(before) => before.as_char() == '>',
                        _ => false,
                    };
                if followed_by_path && !segment_before {
                    if colons_before {
                        // Drop the `::` already written: `to` starts with its own.
                        out.truncate(out.len() - 2);
                    }
                    for (j, segment) in to.segments.iter().enumerate() {
                        if j > 0 || to.leading_colon.is_some() {
                            out.push(TokenTree::Punct(Punct::new(':', Spacing::Joint)));
                            out.push(TokenTree::Punct(Punct::new(':', Spacing::Alone)));
                        }
                        out.push(TokenTree::Ident(segment.ident.clone()));
                    }
                    out.push(TokenTree::Punct(Punct::new(':', Spacing::Joint)));
                    out.push(TokenTree::Punct(Punct::new(':', Spacing::Alone)));
                }
                out.push(tree.clone());
            }
            other => out.push(other.clone()),
        }
    }
    out.into_iter().collect()
}

/// The server module: types, metadata (`WEBHOOKS`, `SPEC`), `Event`, `WebhookHandler`,
/// `dispatch`, and `Receiver`, which serves a `WebhookHandler` to the runtime.
pub(crate) fn server(
    bundle: &Bundle,
    generated: &Progenitor,
    runtime: &syn::Path,
    implemented: Option<(&[String], &str)>,
) -> Result<TokenStream> {
    let rt = runtime;
    let types = &generated.types;
    let payloads = generated.type_names.iter().map(|name| format_ident!("{}", name));
    let implemented_tokens = match implemented {
        Some((methods, type_name)) => quote!(::std::option::Option::Some((#type_name, &[#(#methods),*]))),
        None => quote!(::std::option::Option::None),
    };
    let client = client_module(bundle, generated, rt);
    let operations = bundle.operations.iter().map(|operation| {
        let (id, method, path) = (&operation.operation_id, operation.method.to_uppercase(), &operation.path);
        let summary = operation.summary.clone().unwrap_or_default();
        quote!(#rt::OperationInfo { operation_id: #id, method: #method, path: #path, summary: #summary })
    });
    let title = bundle.document.pointer("/info/title").and_then(Value::as_str).unwrap_or_default();
    let version = bundle.document.pointer("/info/version").and_then(Value::as_str).unwrap_or_default();
    let shape = serde_json::to_string(&crate::diff::Shape::of(bundle)).expect("a shape is JSON");

    let mut infos = Vec::new();
    let mut variants = Vec::new();
    let mut parse_arms = Vec::new();
    let mut info_arms = Vec::new();
    let mut methods = Vec::new();
    let mut dispatch_arms = Vec::new();
    for (index, webhook) in bundle.webhooks.iter().enumerate() {
        let body_ty = &generated.body_types[&webhook.operation_id];
        let body_name = quote!(#body_ty).to_string().replace(' ', "");
        let method = format_ident!("{}", method_name(&webhook.operation_id));
        let variant = format_ident!("{}", webhook.operation_id.to_upper_camel_case());
        let event = &webhook.event;
        let operation_id = &webhook.operation_id;
        let method_str = method.to_string();
        let summary = webhook.summary.clone().unwrap_or_else(|| webhook.event.clone());
        let description = webhook.description.clone().unwrap_or_default();
        let example = webhook
            .body
            .as_ref()
            .map(|schema| {
                let mut body = example(schema, &bundle.document);
                if let Value::Object(fields) = &mut body {
                    // The provider's `event` is the webhook's key, whatever the example says.
                    if fields.contains_key("event") {
                        fields.insert("event".into(), Value::String(webhook.event.clone()));
                    }
                }
                body.to_string()
            })
            .unwrap_or_else(|| "{}".to_owned());

        infos.push(quote! {
            #rt::WebhookInfo {
                event: #event,
                operation_id: #operation_id,
                method: #method_str,
                summary: #summary,
                body_type: #body_name,
                example: #example,
            }
        });
        let doc = doc_lines(&summary, &description);
        let variant_doc = format!(" `{event}`: {summary}");
        variants.push(quote! {
            #[doc = #variant_doc]
            #variant(::std::boxed::Box<#body_ty>)
        });
        parse_arms.push(quote! {
            #event => #rt::parse_body::<#body_ty>(body).map(|b| Self::#variant(::std::boxed::Box::new(b)))
        });
        info_arms.push(quote! { Self::#variant(_) => &WEBHOOKS[#index] });
        let default_doc = format!(
            " The default body logs a warning that `{event}` is not handled yet and acknowledges the delivery."
        );
        methods.push(quote! {
            #(#doc)*
            #[doc = ""]
            #[doc = #default_doc]
            fn #method(
                &self,
                ctx: &#rt::DeliveryContext,
                body: #body_ty,
            ) -> impl ::std::future::Future<Output = #rt::HandlerResult> + Send {
                let _ = body;
                self.unimplemented(ctx, &WEBHOOKS[#index])
            }
        });
        dispatch_arms.push(quote! { Event::#variant(body) => handler.#method(ctx, *body).await });
    }

    Ok(quote! {
        /// The payload types, generated by progenitor from the spec.
        #[allow(clippy::all, clippy::pedantic, missing_docs, unused_imports, dead_code)]
        pub mod types {
            #types

            #(impl #rt::Payload for #payloads {})*
        }

        /// Every webhook in the spec, in spec order.
        #[allow(dead_code, clippy::all, clippy::pedantic)]
        pub const WEBHOOKS: &[#rt::WebhookInfo] = &[#(#infos),*];

        /// The spec this module was generated from: its title, version and webhooks, and which
        /// `WebhookHandler` methods the build saw implemented.
        #[allow(dead_code, clippy::all, clippy::pedantic)]
        pub const SPEC: #rt::Spec = #rt::Spec {
            title: #title,
            version: #version,
            webhooks: WEBHOOKS,
            operations: OPERATIONS,
            implemented: #implemented_tokens,
            shape: #shape,
        };

        /// Every operation of the REST API's client ([`client::Client`]), in spec order; none
        /// when the spec has no `paths:`.
        #[allow(dead_code, clippy::all, clippy::pedantic)]
        pub const OPERATIONS: &[#rt::OperationInfo] = &[#(#operations),*];

        #client

        /// A delivery parsed into the typed body of the webhook its `event` names.
        #[allow(dead_code, clippy::all, clippy::pedantic)]
        #[derive(Debug, Clone)]
        pub enum Event {
            #(#variants,)*
        }

        #[allow(dead_code, clippy::all, clippy::pedantic)]
        impl Event {
            /// Parses `body` as the webhook named `event` (the body's `event` field).
            ///
            /// An event the spec does not know, or a body that does not fit its type, is
            /// `Err` with the reason (down to the field path): such a delivery goes to
            /// [`WebhookHandler::fallback`], it is not an error of the delivery.
            pub fn parse(event: &str, body: &[u8]) -> ::std::result::Result<Self, #rt::Unmatched> {
                match event {
                    #(#parse_arms,)*
                    _ => ::std::result::Result::Err(#rt::Unmatched::UnknownEvent),
                }
            }

            /// Classifies a delivery by its `event` field (`None` when the body has none):
            /// the typed event, or why it goes to the fallback.
            pub fn classify(
                event: ::std::option::Option<&str>,
                body: &[u8],
            ) -> ::std::result::Result<Self, #rt::Unmatched> {
                match event {
                    ::std::option::Option::Some(name) => Self::parse(name, body),
                    ::std::option::Option::None => ::std::result::Result::Err(#rt::Unmatched::NoEventName),
                }
            }

            /// The webhook this event belongs to.
            pub fn webhook(&self) -> &'static #rt::WebhookInfo {
                match *self {
                    #(#info_arms,)*
                }
            }
        }

        /// What the service does with each webhook: implement the methods you care about.
        ///
        /// Every method has a default, so a webhook added to the spec never breaks the build
        /// and is never lost: it is acknowledged with a warning until you implement it.
        pub trait WebhookHandler: Send + Sync + 'static {
            #(#methods)*

            /// Called by the default body of every typed method that is not implemented.
            /// Logs a warning and acknowledges the delivery.
            fn unimplemented(
                &self,
                ctx: &#rt::DeliveryContext,
                webhook: &'static #rt::WebhookInfo,
            ) -> impl ::std::future::Future<Output = #rt::HandlerResult> + Send {
                #rt::unimplemented_webhook(ctx, webhook)
            }

            /// A signed delivery that matched no typed webhook: an event the spec does not
            /// know (`testEvent`, or one added after the last regeneration), or a body that
            /// does not fit its type (a new enum value, a missing field). `event.reason` says
            /// why. The default acknowledges it with a warning.
            fn fallback(
                &self,
                ctx: &#rt::DeliveryContext,
                event: #rt::UnmatchedEvent,
            ) -> impl ::std::future::Future<Output = #rt::HandlerResult> + Send {
                #rt::unhandled_fallback(&SPEC, ctx, event)
            }
        }

        /// Calls the handler method that `event` belongs to.
        #[allow(dead_code, clippy::all, clippy::pedantic)]
        pub async fn dispatch<H: WebhookHandler + ?Sized>(
            handler: &H,
            ctx: &#rt::DeliveryContext,
            event: Event,
        ) -> #rt::HandlerResult {
            match event {
                #(#dispatch_arms,)*
            }
        }

        /// Serves a [`WebhookHandler`] to the runtime: `ServiceBuilder::new(Receiver::new(handler), keys)`.
        /// Derefs to the handler.
        #[allow(dead_code, clippy::all, clippy::pedantic)]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct Receiver<H>(H);

        #[allow(dead_code, clippy::all, clippy::pedantic)]
        impl<H> Receiver<H> {
            /// Serves `handler`.
            pub const fn new(handler: H) -> Self {
                Self(handler)
            }

            /// The handler.
            pub fn into_inner(self) -> H {
                self.0
            }
        }

        impl<H> ::std::ops::Deref for Receiver<H> {
            type Target = H;

            fn deref(&self) -> &H {
                &self.0
            }
        }

        impl<H: WebhookHandler> #rt::Webhooks for Receiver<H> {
            type Event = Event;

            const SPEC: #rt::Spec = SPEC;

            fn classify(
                event: ::std::option::Option<&str>,
                body: &[u8],
            ) -> ::std::result::Result<Event, #rt::Unmatched> {
                Event::classify(event, body)
            }

            fn handle(
                &self,
                ctx: &#rt::DeliveryContext,
                event: Event,
            ) -> impl ::std::future::Future<Output = #rt::HandlerResult> + Send {
                dispatch(&self.0, ctx, event)
            }

            fn fallback(
                &self,
                ctx: &#rt::DeliveryContext,
                event: #rt::UnmatchedEvent,
            ) -> impl ::std::future::Future<Output = #rt::HandlerResult> + Send {
                self.0.fallback(ctx, event)
            }
        }
    })
}

fn doc_lines(summary: &str, description: &str) -> Vec<TokenStream> {
    let mut lines = vec![format!(" {}", summary.trim())];
    if !description.trim().is_empty() {
        lines.push(String::new());
        lines.extend(description.trim().lines().map(|l| format!(" {}", l.trim_end())));
    }
    lines.into_iter().map(|l| quote!(#[doc = #l])).collect()
}
