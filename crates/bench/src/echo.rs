//! The echo server the benchmark measures against. `POST /echo` streams
//! the request body back; `GET /bytes/N` streams N bytes.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const CHUNK: usize = 64 * 1024;

/// Serves until the process ends; prints `listening on ADDR` first.
pub async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(request: http::Request<Incoming>) -> Result<http::Response<BoxBody<Bytes, hyper::Error>>, Infallible> {
    let path = request.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let body = stream::unfold(n, move |left| {
            let chunk = chunk.clone();
            async move {
                (left > 0).then(|| {
                    let take = left.min(CHUNK as u64) as usize;
                    (Ok::<_, hyper::Error>(Frame::data(chunk.slice(..take))), left - take as u64)
                })
            }
        });
        let response = http::Response::builder()
            .header(http::header::CONTENT_LENGTH, n)
            .body(BodyExt::boxed(StreamBody::new(body)))
            .expect("valid response");
        return Ok(response);
    }
    let mut response = http::Response::builder();
    if let Some(length) = request.headers().get(http::header::CONTENT_LENGTH) {
        response = response.header(http::header::CONTENT_LENGTH, length);
    }
    Ok(response.body(request.into_body().boxed()).expect("valid response"))
}
