//! JSON-RPC 1.0 as OVSDB speaks it: framing of back-to-back JSON objects and message decoding.
//!
//! Owns bytes ⇄ [`Message`]. No I/O, no state beyond the partial input: the connection feeds
//! whatever it read and takes out complete messages. The scanner tracks object depth and
//! string/escape state incrementally, so a large reply arriving in many reads is scanned once.
//! What the server sends is decoded as an [`Incoming`]: the envelope only, with `params`,
//! `result` and `error` left as raw JSON text borrowed from the frame, for whoever knows their
//! shape to parse straight into typed values (a 19 MB dump never becomes a `Value` tree).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// One decoded JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        method: String,
        params: Value,
        id: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: Value,
        result: Value,
        error: Value,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unexpected byte {0:#04x} between messages")]
    Garbage(u8),
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("not a JSON-RPC message: {0}")]
    NotJsonRpc(String),
}

/// Room made for each read.
const READ_CHUNK: usize = 64 * 1024;

/// After a frame at least this large the decoder starts over with a small buffer.
const FRESH_BUFFER_AFTER: usize = 1 << 20;

/// Incremental splitter of a byte stream into complete top-level JSON objects.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    /// Bytes of `buf` already scanned.
    pos: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    max_len: usize,
}

impl FrameDecoder {
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::with_capacity(64 * 1024),
            pos: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            max_len,
        }
    }

    /// The buffer to read into (`AsyncReadExt::read_buf`), with room for a
    /// read. It grows by doubling: a large message (an initial dump of
    /// 100,000 rows) must not be copied again for every small read.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(self.buf.len().max(READ_CHUNK));
        }
        &mut self.buf
    }

    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Takes the next complete object out of the buffer, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.depth == 0 {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        // Drop whitespace between messages so it never accumulates.
                        let _ = self.buf.split_to(self.pos);
                        self.pos = 0;
                    }
                    b'{' => self.depth = 1,
                    other => return Err(FrameError::Garbage(other)),
                }
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                } else {
                    // Most of a message is string content (uuids, names, addresses): skip
                    // to the next quote or backslash at once instead of byte by byte.
                    self.pos = memchr::memchr2(b'"', b'\\', &self.buf[self.pos..])
                        .map_or(self.buf.len(), |i| self.pos + i);
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let frame = self.buf.split_to(self.pos).freeze();
                        self.pos = 0;
                        if frame.len() >= FRESH_BUFFER_AFTER {
                            // The frame shares the buffer's allocation, which would otherwise
                            // be reused (and kept, at twice the largest message) for good: the
                            // rest moves to a small buffer and the frame alone holds the big
                            // one, freed with it.
                            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.buf.len()));
                            fresh.extend_from_slice(&self.buf);
                            self.buf = fresh;
                        }
                        return Ok(Some(frame));
                    }
                }
                _ => {}
            }
        }
        if self.buf.len() > self.max_len {
            return Err(FrameError::TooLarge(self.max_len));
        }
        Ok(None)
    }

    /// Decodes the next complete message, if there is one.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(frame) => decode(&frame).map(Some),
        }
    }
}

/// Decodes one complete JSON object as a JSON-RPC message.
pub fn decode(frame: &[u8]) -> Result<Message, FrameError> {
    let v: Value = serde_json::from_slice(frame).map_err(|e| FrameError::Json(e.to_string()))?;
    let Value::Object(mut obj) = v else {
        return Err(FrameError::NotJsonRpc("not an object".into()));
    };
    if let Some(method) = obj.remove("method") {
        let Value::String(method) = method else {
            return Err(FrameError::NotJsonRpc("method is not a string".into()));
        };
        let params = obj.remove("params").unwrap_or(Value::Null);
        return Ok(match obj.remove("id") {
            None | Some(Value::Null) => Message::Notification { method, params },
            Some(id) => Message::Request { method, params, id },
        });
    }
    match obj.remove("id") {
        Some(id) if obj.contains_key("result") || obj.contains_key("error") => {
            Ok(Message::Response {
                id,
                result: obj.remove("result").unwrap_or(Value::Null),
                error: obj.remove("error").unwrap_or(Value::Null),
            })
        }
        _ => Err(FrameError::NotJsonRpc(
            "neither a request nor a response".into(),
        )),
    }
}

/// A message as received: the envelope decoded, its payload still raw JSON borrowed from the
/// frame (no copy, no tree).
#[derive(Debug)]
pub enum Incoming<'a> {
    Request {
        method: Cow<'a, str>,
        params: &'a RawValue,
        id: Value,
    },
    Notification {
        method: Cow<'a, str>,
        params: &'a RawValue,
    },
    Response {
        id: Value,
        /// `Err` holds the error object when it is not `null`.
        result: Result<&'a RawValue, Value>,
    },
}

/// The raw JSON `null`.
pub fn raw_null() -> &'static RawValue {
    // A fixed, valid JSON text: cannot fail.
    serde_json::from_str("null").expect("null is JSON")
}

/// Parses a raw payload into a `Value` (small payloads: echo params, error objects, ids).
pub fn raw_to_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Decodes one complete JSON object's envelope, leaving its payload raw (see [`Incoming`]).
pub fn decode_incoming(frame: &[u8]) -> Result<Incoming<'_>, FrameError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow, default)]
        method: Option<Cow<'a, str>>,
        #[serde(default)]
        id: Option<Value>,
        #[serde(borrow, default)]
        params: Option<&'a RawValue>,
        #[serde(borrow, default)]
        result: Option<&'a RawValue>,
        #[serde(borrow, default)]
        error: Option<&'a RawValue>,
    }
    let e: Envelope<'_> = serde_json::from_slice(frame).map_err(|e| {
        if e.is_data() {
            FrameError::NotJsonRpc(e.to_string())
        } else {
            FrameError::Json(e.to_string())
        }
    })?;
    let params = match e.params {
        Some(p) => p,
        None => raw_null(),
    };
    match (e.method, e.id) {
        (Some(method), None) => Ok(Incoming::Notification { method, params }),
        (Some(method), Some(id)) => Ok(Incoming::Request { method, params, id }),
        (None, Some(id)) if e.result.is_some() || e.error.is_some() => {
            let result = match e.error {
                Some(err) if err.get() != "null" => Err(raw_to_value(err)),
                _ => Ok(match e.result {
                    Some(r) => r,
                    None => raw_null(),
                }),
            };
            Ok(Incoming::Response { id, result })
        }
        _ => Err(FrameError::NotJsonRpc(
            "neither a request nor a response".into(),
        )),
    }
}

/// Encodes a message (never fails: `Value`s always serialize).
pub fn encode(msg: &Message) -> Vec<u8> {
    let v = match msg {
        Message::Request { method, params, id } => {
            json!({"method": method, "params": params, "id": id})
        }
        Message::Notification { method, params } => {
            json!({"method": method, "params": params, "id": null})
        }
        Message::Response { id, result, error } => {
            json!({"id": id, "result": result, "error": error})
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut FrameDecoder) -> Vec<Message> {
        let mut out = vec![];
        while let Some(m) = d.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn splits_back_to_back_objects_fed_byte_by_byte() {
        let input = br#"{"id":1,"result":{"a":"}{\"x"},"error":null}  {"method":"echo","params":[],"id":"echo"}
{"method":"update2","params":[null,{"t":{}}],"id":null}"#;
        let mut d = FrameDecoder::new(1 << 20);
        let mut got = vec![];
        for b in input.iter() {
            d.extend(&[*b]);
            got.extend(all(&mut d));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            Message::Response {
                id: json!(1),
                result: json!({"a": "}{\"x"}),
                error: Value::Null
            }
        );
        assert!(matches!(&got[1], Message::Request { method, .. } if method == "echo"));
        assert!(matches!(&got[2], Message::Notification { method, .. } if method == "update2"));
    }

    /// Strings holding escaped quotes, backslashes and braces, fed in chunks of every size:
    /// the same frames as the whole input at once (the scan skips through string content).
    #[test]
    fn strings_with_escapes_frame_alike_in_any_chunking() {
        let input = br#"{"id":1,"result":[{"uuid":["uuid","8e54"]},"a\"}{b","c\\","d\\\"e{[","\\\\"],"error":null}{"id":2,"result":"x\"y","error":null} {"method":"echo","params":["]\\"],"id":"echo"}"#;
        let frames = |chunk: usize| {
            let mut d = FrameDecoder::new(1 << 20);
            let mut out = vec![];
            for c in input.chunks(chunk) {
                d.extend(c);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            out
        };
        let whole = frames(input.len());
        assert_eq!(whole.len(), 3);
        assert!(whole[0].ends_with(br#""error":null}"#), "{whole:?}");
        for f in &whole {
            assert!(decode(f).is_ok(), "{f:?}");
        }
        for chunk in 1..input.len() {
            assert_eq!(frames(chunk), whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn escaped_backslash_before_quote() {
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(br#"{"id":1,"result":"a\\","error":null}{"id":2,"result":[],"error":null}"#);
        assert_eq!(all(&mut d).len(), 2);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(d.next_frame(), Err(FrameError::Garbage(b'H')));
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(b"{\"id\":1,,}");
        assert!(matches!(d.next_message(), Err(FrameError::Json(_))));
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(b"{\"x\":1}");
        assert!(matches!(d.next_message(), Err(FrameError::NotJsonRpc(_))));
    }

    #[test]
    fn truncated_input_waits_and_oversize_fails() {
        let mut d = FrameDecoder::new(16);
        d.extend(b"{\"id\":1,\"res");
        assert_eq!(d.next_frame(), Ok(None));
        d.extend(b"ult\":[1,2,3,4,5,6,7,8]");
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(16)));
    }

    /// A large frame takes its allocation with it: the decoder does not keep a buffer the size
    /// of the largest message it ever saw, and what followed the frame is still there.
    #[test]
    fn a_large_frame_leaves_a_small_buffer_behind() {
        let mut d = FrameDecoder::new(1 << 24);
        let big = format!(
            r#"{{"id":1,"result":"{}","error":null}}"#,
            "x".repeat(2 << 20)
        );
        d.buffer().extend_from_slice(big.as_bytes());
        d.extend(br#"{"id":2,"result":[],"err"#);
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(frame.len(), big.len());
        assert!(
            d.buf.capacity() < 1 << 20,
            "kept {} bytes",
            d.buf.capacity()
        );
        assert_eq!(d.next_frame(), Ok(None));
        d.extend(br#"or":null}"#);
        assert!(matches!(
            d.next_message(),
            Ok(Some(Message::Response { .. }))
        ));
    }

    /// The envelope as [`decode`] reads it, the payload left raw; `null` ids are notifications.
    #[test]
    fn incoming_envelopes() {
        let n = br#"{"id":null,"method":"update2","params":[null,{"t":{"u":{"delete":null}}}]}"#;
        match decode_incoming(n).unwrap() {
            Incoming::Notification { method, params } => {
                assert_eq!(method, "update2");
                assert_eq!(params.get(), r#"[null,{"t":{"u":{"delete":null}}}]"#);
            }
            other => panic!("{other:?}"),
        }
        match decode_incoming(br#"{"params":[1],"id":"echo","method":"echo"}"#).unwrap() {
            Incoming::Request { method, params, id } => {
                assert_eq!(
                    (method.as_ref(), params.get(), id),
                    ("echo", "[1]", json!("echo"))
                )
            }
            other => panic!("{other:?}"),
        }
        match decode_incoming(br#"{"result":{"a":[1]},"error":null,"id":3}"#).unwrap() {
            Incoming::Response { id, result } => {
                assert_eq!(id, json!(3));
                assert_eq!(result.unwrap().get(), r#"{"a":[1]}"#);
            }
            other => panic!("{other:?}"),
        }
        match decode_incoming(br#"{"error":{"error":"x"},"result":null,"id":4}"#).unwrap() {
            Incoming::Response { result, .. } => {
                assert_eq!(result.unwrap_err(), json!({"error": "x"}))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_incoming(b"{\"x\":1}"),
            Err(FrameError::NotJsonRpc(_))
        ));
        assert!(matches!(
            decode_incoming(b"{\"id\":1,,}"),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            decode_incoming(br#"{"method":5,"id":null}"#),
            Err(FrameError::NotJsonRpc(_))
        ));
    }

    #[test]
    fn encode_roundtrip() {
        let m = Message::Request {
            method: "transact".into(),
            params: json!(["db", {"op": "comment", "comment": "x"}]),
            id: json!(7),
        };
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }
}
