//! Reading a request body before answering: bounded, and drained when it is
//! too large, so that the client finishes sending and reads the answer
//! (answering early and closing makes senders fail with a broken pipe).

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// How many bytes past the limit are read and discarded before giving up on
/// a body (the connection is then closed).
pub(crate) const DRAIN_BEYOND_LIMIT: usize = 64 << 20;

/// A request body as read.
#[derive(Debug)]
pub(crate) enum ReadBody {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// Longer than the limit (read to its end and discarded, or abandoned
    /// beyond [`DRAIN_BEYOND_LIMIT`]).
    TooLarge,
    /// The client stopped sending (the connection broke).
    Broken,
}

/// Reads `body` whole when it fits in `limit` bytes; otherwise discards it
/// (up to [`DRAIN_BEYOND_LIMIT`] bytes past the limit).
pub(crate) async fn read(body: Body, limit: usize, declared: Option<u64>) -> ReadBody {
    let mut buf = BytesMut::new();
    let mut seen: usize = 0;
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ReadBody::Broken;
        };
        seen = seen.saturating_add(chunk.len());
        if seen > limit {
            too_large = true;
            buf = BytesMut::new();
        }
        if too_large {
            if seen > limit.saturating_add(DRAIN_BEYOND_LIMIT) {
                return ReadBody::TooLarge;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if too_large {
        ReadBody::TooLarge
    } else {
        ReadBody::Complete(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> Body {
        let items: Vec<Result<Bytes, std::io::Error>> =
            chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
        Body::from_stream(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn within_and_beyond_the_limit() {
        match read(body(vec![b"abc", b"de"]), 5, None).await {
            ReadBody::Complete(b) => assert_eq!(&b[..], b"abcde"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(body(vec![b"abc", b"def"]), 5, None).await,
            ReadBody::TooLarge
        ));
        // A declared length above the limit is not buffered.
        assert!(matches!(
            read(body(vec![b"ab"]), 5, Some(9)).await,
            ReadBody::TooLarge
        ));
        let broken: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"a")),
            Err(std::io::Error::other("gone")),
        ];
        assert!(matches!(
            read(
                Body::from_stream(futures_util::stream::iter(broken)),
                5,
                None
            )
            .await,
            ReadBody::Broken
        ));
    }
}
