//! Request helpers: a bearer token on a request, what a call answered, every item of a
//! paged list, and any RPC called by its path with raw bytes (the role × RPC tests reach
//! every RPC the same way).

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The code a call answered (OK for a response).
pub fn code<T>(result: Result<tonic::Response<T>, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Asserts INVALID_ARGUMENT naming `field` (the proto field name): the message starts
/// with its JSON name and a `google.rpc.BadRequest` detail holds a violation of it.
pub fn assert_field_error<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    use tonic_types::StatusExt;
    let status = match result {
        Ok(value) => panic!("expected INVALID_ARGUMENT on {field}, got {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let json = popug_errors::json_name(field);
    assert!(
        status.message().starts_with(&format!("{json}:")),
        "the message does not name {json}: {status:?}"
    );
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no google.rpc.BadRequest in {status:?}"));
    assert!(
        bad.field_violations.iter().any(|v| v.field == json),
        "no violation of {json} in {bad:?}"
    );
}

/// Every item of a paged list, page after page: `page(token)` fetches the page at `token`
/// (empty for the first) and gives its items and the next page's token (empty after the
/// last).
pub async fn all_pages<T, F, Fut>(mut page: F) -> Vec<T>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (Vec<T>, String)>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (mut more, next) = page(token).await;
        items.append(&mut more);
        if next.is_empty() {
            return items;
        }
        token = next;
    }
}

/// Whether the gateway itself refused the call (rather than passing on an upstream's
/// answer).
pub fn refused_by_gateway(status: &Status) -> bool {
    status
        .metadata()
        .get("x-popug-refused-by")
        .is_some_and(|v| v == "gateway")
}

/// Calls RPC `path` on `channel` with `body` (an encoded request message) as raw bytes.
pub async fn raw_call(
    channel: &Channel,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let request = match token {
        Some(token) => with_token(token, body),
        None => Request::new(body),
    };
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(request, path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// Passes bytes through unchanged, both ways.
#[derive(Default, Clone)]
pub struct RawCodec;
pub struct RawEncoder;
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
