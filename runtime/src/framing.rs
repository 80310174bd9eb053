//! Where each request on a connection begins and ends, worked out before actix sees the bytes.
//!
//! [`Framer`] sits between the socket and actix's HTTP/1.1 dispatcher and hands actix **one
//! request at a time**: a head only once all of it is here (so its clock, in
//! [`crate::server`], runs from its first byte, whatever came before it on the connection),
//! then exactly that request's body, then nothing more until the request is answered. What a
//! client sent beyond it (a pipelined request) waits in the framer's buffer, and in the
//! kernel's, until then. So actix never holds a head in progress (the framer does, at most
//! [`HEAD_LIMIT`] bytes of it), never sees pipelining, and every request it gets is whole.
//!
//! The framing mirrors actix's own (`Content-Length`, `Transfer-Encoding: chunked`, nothing
//! else); a head actix would refuse is handed on alone, to be refused, and the connection ends
//! with that answer. `Upgrade` is not served: its header (and the `upgrade` option of
//! `Connection`) is renamed `ignored` before actix sees it, so a request carrying it is framed by
//! its `Content-Length` and answered as any other.

/// The largest request head taken, leading empty lines included; past it the client gets
/// 431 `head_too_large` and the connection closes. Also the most bytes a connection buffers.
pub(crate) const HEAD_LIMIT: usize = 16 * 1024;

/// The interim answer actix writes for `Expect: 100-continue`, byte for byte.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where the connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a whole head; nothing is handed on meanwhile.
    Head,
    /// Handing on the body.
    Body(Body),
    /// The request is with actix; the next one waits for its answer.
    Answering,
    /// A head actix will refuse, or whose body would run to the end of the connection: nothing
    /// after it is handed on, and the connection closes with its answer.
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked body is (lenient where actix is strict: actix refuses what it cannot read,
/// and closes the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The size line, up to its line feed: the size read so far, and whether the digits ended
    /// (an extension follows).
    Size { size: u64, ext: bool },
    /// The chunk's data.
    Data(u64),
    /// The line end after a chunk's data.
    DataEnd,
    /// The line end after the last (empty) chunk.
    End,
}

/// What a write to the client meant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// The final answer to the current request began in this write.
    pub answered: bool,
    /// That answer closes the connection (`connection: close`).
    pub closes: bool,
}

/// A client's head that the framer refuses itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    HeadTooLarge,
}

/// The bytes of one connection between the socket and actix: see the module doc.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Bytes read from the socket and not yet handed on are `buf[start..end]`; allocated at the
    /// first read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many of them belong to the current request and may be handed on now.
    give: usize,
    phase: Phase,
    /// The final answer to the current request has begun.
    answered: bool,
    /// Bytes of an interim `100 Continue` seen at the start of the answer so far.
    interim: usize,
    /// No head has been handed on yet: the first is waited for from the connection's start.
    first: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            give: 0,
            phase: Phase::Head,
            answered: false,
            interim: 0,
            first: true,
        }
    }
}

impl Framer {
    /// Room to read more from the socket into, or `None` when nothing should be read now: the
    /// current request's bytes are all here and it is not answered yet.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        if matches!(self.phase, Phase::Answering | Phase::Last) {
            return None;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; HEAD_LIMIT];
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        (self.end < self.buf.len()).then(|| &mut self.buf[self.end..])
    }

    /// `n` bytes were read into [`Framer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Whether a head is being waited for and some of it is here (or it is the connection's
    /// first): its clock runs.
    pub fn head_started(&self) -> bool {
        self.phase == Phase::Head && (self.first || self.end > self.start + self.give)
    }

    /// Works out how much of what is buffered may be handed on.
    pub fn advance(&mut self) -> Result<(), Refused> {
        loop {
            match self.phase {
                Phase::Head => {
                    if self.give > 0 || self.end == self.start {
                        return Ok(());
                    }
                    let Some(length) = self.head()? else { return Ok(()) };
                    self.give = length;
                    self.first = false;
                    self.answered = false;
                    self.interim = 0;
                }
                Phase::Body(Body::Length(left)) => {
                    let here = (self.end - self.start - self.give) as u64;
                    let taken = left.min(here);
                    self.give += taken as usize;
                    if taken < left {
                        self.phase = Phase::Body(Body::Length(left - taken));
                        return Ok(());
                    }
                    self.body_done();
                }
                Phase::Body(Body::Chunked(chunk)) => {
                    let from = self.start + self.give;
                    let (taken, next) = chunks(chunk, &self.buf[from..self.end]);
                    self.give += taken;
                    match next {
                        Some(chunk) => {
                            self.phase = Phase::Body(Body::Chunked(chunk));
                            return Ok(());
                        }
                        None => self.body_done(),
                    }
                }
                Phase::Answering | Phase::Last => return Ok(()),
            }
        }
    }

    /// Hands on up to `max` bytes of the current request.
    pub fn take(&mut self, max: usize) -> &[u8] {
        let (n, from) = (self.give.min(max), self.start);
        self.give -= n;
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        &self.buf[from..from + n]
    }

    /// Bytes waiting to be handed on now.
    pub fn giving(&self) -> usize {
        self.give
    }

    /// Observes bytes actix wrote to the client: an answer that is not an interim
    /// `100 Continue` ends the request (once its body is handed on too).
    pub fn written(&mut self, mut bytes: &[u8]) -> Written {
        let mut seen = Written::default();
        while !bytes.is_empty() && !self.answered {
            let want = &CONTINUE[self.interim..];
            let same = want.iter().zip(bytes).take_while(|(a, b)| a == b).count();
            if same == want.len() {
                self.interim = 0;
                bytes = &bytes[same..];
            } else if same == bytes.len() {
                self.interim += same;
                return seen;
            } else {
                self.answered = true;
                seen.answered = true;
                seen.closes = self.interim == 0 && closes(bytes);
                match self.phase {
                    Phase::Answering => self.phase = Phase::Head,
                    Phase::Last => seen.closes = true,
                    Phase::Head | Phase::Body(_) => {}
                }
            }
        }
        seen
    }

    /// The head at the front of the buffer, once all of it is here: its length, with the
    /// request's framing decided (and `Upgrade` renamed).
    fn head(&mut self) -> Result<Option<usize>, Refused> {
        let bytes = &self.buf[self.start..self.end];
        let mut headers = [httparse::EMPTY_HEADER; 96];
        let mut request = httparse::Request::new(&mut headers);
        let (length, framing, renames) = match request.parse(bytes) {
            Ok(httparse::Status::Complete(length)) => {
                let (framing, renames) = framing(&request, bytes);
                (length, framing, renames)
            }
            Ok(httparse::Status::Partial) if bytes.len() >= HEAD_LIMIT => return Err(Refused::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            // Malformed, or too many headers: actix refuses it, and the connection ends.
            Err(_) => (bytes.len(), Phase::Last, Renames::default()),
        };
        for at in renames.at.iter().take(renames.count) {
            self.buf[self.start + at..self.start + at + IGNORED.len()].copy_from_slice(IGNORED);
        }
        self.phase = framing;
        Ok(Some(length))
    }

    fn body_done(&mut self) {
        self.phase = if self.answered { Phase::Head } else { Phase::Answering };
    }
}

/// What `Upgrade` becomes: a name (and an option of `Connection`) of the same length.
const IGNORED: &[u8] = b"ignored";

/// Where in a head the word `upgrade` is renamed.
#[derive(Debug, Default)]
struct Renames {
    at: [usize; 8],
    count: usize,
}

impl Renames {
    fn push(&mut self, at: usize) -> bool {
        let Some(slot) = self.at.get_mut(self.count) else { return false };
        *slot = at;
        self.count += 1;
        true
    }
}

/// How the request with this head is framed, as actix frames it; what actix would refuse, or
/// read to the end of the connection, is the connection's last request.
fn framing(request: &httparse::Request<'_, '_>, bytes: &[u8]) -> (Phase, Renames) {
    let offset = |part: &[u8]| part.as_ptr() as usize - bytes.as_ptr() as usize;
    let (mut length, mut lengths, mut encodings, mut chunked) = (None, 0, 0, false);
    let mut renames = Renames::default();
    let mut last = false;
    for header in request.headers.iter() {
        let name = header.name.as_bytes();
        let value = header.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length =
                std::str::from_utf8(value).ok().filter(|v| !v.starts_with('+')).and_then(|v| v.parse::<u64>().ok());
            last |= length.is_none();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = value.eq_ignore_ascii_case(b"chunked");
            last |= !chunked && !value.eq_ignore_ascii_case(b"identity");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            last |= !renames.push(offset(name));
        } else if name.eq_ignore_ascii_case(b"connection") {
            let start = offset(header.value);
            for (at, _) in
                header.value.windows(IGNORED.len()).enumerate().filter(|(_, w)| w.eq_ignore_ascii_case(b"upgrade"))
            {
                last |= !renames.push(start + at);
            }
        }
    }
    let http10 = request.version == Some(0);
    last |= lengths > 1 || encodings > 1 || (encodings > 0 && (http10 || lengths > 0));
    last |= request.method.is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
    let phase = if last {
        Phase::Last
    } else if chunked {
        Phase::Body(Body::Chunked(Chunk::Size { size: 0, ext: false }))
    } else {
        match length {
            Some(n) if n > 0 => Phase::Body(Body::Length(n)),
            _ => Phase::Answering,
        }
    };
    (phase, renames)
}

/// How many of `bytes` belong to a chunked body in state `chunk`, and its state after them
/// (`None`: the body ended).
fn chunks(mut chunk: Chunk, bytes: &[u8]) -> (usize, Option<Chunk>) {
    let mut at = 0;
    while at < bytes.len() {
        chunk = match chunk {
            Chunk::Size { size, ext } => {
                let byte = bytes[at];
                at += 1;
                match (byte as char).to_digit(16) {
                    _ if byte == b'\n' && size == 0 => Chunk::End,
                    _ if byte == b'\n' => Chunk::Data(size),
                    Some(d) if !ext => Chunk::Size { size: size.saturating_mul(16).saturating_add(u64::from(d)), ext },
                    _ => Chunk::Size { size, ext: true },
                }
            }
            Chunk::Data(left) => {
                let taken = left.min((bytes.len() - at) as u64);
                at += taken as usize;
                if taken == left { Chunk::DataEnd } else { Chunk::Data(left - taken) }
            }
            Chunk::DataEnd => {
                at += 1;
                if bytes[at - 1] == b'\n' { Chunk::Size { size: 0, ext: false } } else { Chunk::DataEnd }
            }
            Chunk::End => {
                at += 1;
                if bytes[at - 1] == b'\n' {
                    return (at, None);
                }
                Chunk::End
            }
        };
    }
    (at, Some(chunk))
}

/// Whether `bytes` start an answer whose head says `connection: close` (as actix writes it).
fn closes(bytes: &[u8]) -> bool {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // Built once: `memmem::find` builds its searcher on every call.
    static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
    static CLOSE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\nconnection: close\r\n"));
    if !bytes.starts_with(b"HTTP/1.") {
        return false;
    }
    let head = HEAD_END.find(bytes).map_or(bytes, |end| &bytes[..end + 2]);
    CLOSE.find(head).is_some()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Framer, HEAD_LIMIT, Refused};

    /// Feeds `input` in pieces cut at `cuts`, handing on all it may and answering each request
    /// once it is whole (with a `100 Continue` first when `interim`): the bytes handed on before
    /// each answer.
    fn run(input: &[u8], cuts: &[usize], interim: bool) -> Vec<Vec<u8>> {
        let mut framer = Framer::default();
        let (mut requests, mut current, mut from) = (Vec::new(), Vec::new(), 0);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.min(&input.len()).to_owned()).chain([input.len()]).collect();
        cuts.sort_unstable();
        for to in cuts {
            let mut piece = &input[from..to];
            from = to;
            loop {
                framer.advance().unwrap();
                while framer.giving() > 0 {
                    current.extend_from_slice(framer.take(7));
                    framer.advance().unwrap();
                }
                match framer.spare() {
                    None => {
                        let answer: &[u8] = if interim {
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\n\r\n"
                        };
                        assert!(framer.written(answer).answered);
                        requests.push(std::mem::take(&mut current));
                    }
                    Some(_) if piece.is_empty() => break,
                    Some(spare) => {
                        let n = spare.len().min(piece.len());
                        spare[..n].copy_from_slice(&piece[..n]);
                        framer.filled(n);
                        piece = &piece[n..];
                    }
                }
            }
        }
        assert!(current.is_empty(), "handed on without an end: {:?}", String::from_utf8_lossy(&current));
        requests
    }

    fn request(kind: u8, body: &[u8], blank_lines: usize) -> Vec<u8> {
        let mut out = b"\r\n".repeat(blank_lines);
        match kind % 4 {
            0 => out.extend_from_slice(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"),
            1 => {
                out.extend_from_slice(
                    format!("POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                out.extend_from_slice(body);
            }
            2 => {
                out.extend_from_slice(b"POST /webhook HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n");
                for chunk in body.chunks(5) {
                    out.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            _ => {
                out.extend_from_slice(
                    b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nexpect: 100-continue\r\n\r\n",
                );
            }
        }
        out
    }

    proptest! {
        #[test]
        fn each_request_is_handed_on_whole_and_alone_however_the_bytes_arrive(
            requests in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..40), 0usize..3), 1..6),
            cuts in proptest::collection::vec(0usize..600, 0..8),
            interim in any::<bool>(),
        ) {
            let requests: Vec<Vec<u8>> = requests.iter().map(|(kind, body, blank)| request(*kind, body, *blank)).collect();
            let handed = run(&requests.concat(), &cuts, interim);
            prop_assert_eq!(handed, requests);
        }
    }

    #[test]
    fn a_head_s_clock_starts_with_its_first_byte_blank_lines_included() {
        let mut framer = Framer::default();
        assert!(framer.head_started(), "the first head is waited for from the start");
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        framer.spare().unwrap()[..head.len()].copy_from_slice(head);
        framer.filled(head.len());
        framer.advance().unwrap();
        assert_eq!(framer.take(1000).len(), head.len());
        assert!(framer.written(b"HTTP/1.1 200 OK\r\n\r\n").answered);
        framer.advance().unwrap();
        assert!(!framer.head_started(), "the next is timed from its first byte");
        framer.spare().unwrap()[..2].copy_from_slice(b"\r\n");
        framer.filled(2);
        framer.advance().unwrap();
        assert!(framer.head_started(), "an empty line before a head is part of it");
        assert_eq!(framer.giving(), 0, "nothing is handed on before the head is whole");
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        framer.spare().unwrap()[..head.len()].copy_from_slice(head);
        framer.filled(head.len());
        framer.advance().unwrap();
        assert!(!framer.head_started());
        assert_eq!(framer.take(1000).len(), head.len() + 2);
    }

    #[test]
    fn upgrade_is_renamed_and_the_body_framed_by_its_length() {
        let input = b"POST /webhook HTTP/1.1\r\nhost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\ncontent-length: 2\r\n\r\n{}";
        let handed = run(input, &[], false);
        assert_eq!(
            String::from_utf8_lossy(&handed[0]),
            "POST /webhook HTTP/1.1\r\nhost: x\r\nConnection: keep-alive, ignored\r\nignored: websocket\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_head_actix_refuses_is_the_last_thing_handed_on() {
        for head in [
            &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"[..],
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\nab",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nab",
            b"CONNECT x:1 HTTP/1.1\r\nhost: x\r\n\r\nab",
            b"GET / HTTP/1.1\r\nho st: x\r\n\r\nab",
        ] {
            let mut framer = Framer::default();
            framer.spare().unwrap()[..head.len()].copy_from_slice(head);
            framer.filled(head.len());
            framer.advance().unwrap();
            let handed = framer.take(1000).len();
            assert!(
                handed <= head.len() - 2 || head.starts_with(b"GET"),
                "{handed} of {:?}",
                String::from_utf8_lossy(head)
            );
            assert!(framer.spare().is_none(), "nothing more is read: {:?}", String::from_utf8_lossy(head));
            assert!(framer.written(b"HTTP/1.1 400 Bad Request\r\n\r\n").closes, "the answer ends the connection");
        }
    }

    #[test]
    fn a_head_over_the_limit_is_refused() {
        let mut framer = Framer::default();
        let head = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; HEAD_LIMIT]].concat();
        let spare = framer.spare().unwrap();
        let n = spare.len();
        spare.copy_from_slice(&head[..n]);
        framer.filled(n);
        assert_eq!(framer.advance(), Err(Refused::HeadTooLarge));
    }
}
