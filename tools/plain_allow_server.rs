//! The ext_authz server a user would otherwise run: a minimal tonic ext_authz v3 server that
//! allows every request without looking at it, with tonic's default server settings and
//! `#[tokio::main]`'s default runtime. The benchmarks' targets compare certbound with it
//! (docs/benchmarks.md); `examples/allow_server` is the same answer with certbound's own
//! tuned server settings.
//!
//! `cargo run --release --example plain_allow_server -- 127.0.0.1:9293`

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9293".into())
        .parse()?;
    eprintln!("plain_allow_server listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve(addr)
        .await?;
    Ok(())
}
