//! The cost of the ext_authz hop itself: an ext_authz v3 server that allows every request
//! without looking at it, with certbound's gRPC server settings. The benchmarks compare
//! certbound with it (docs/benchmarks.md).
//!
//! `cargo run --release --example allow_server -- 127.0.0.1:9291`

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
        .unwrap_or_else(|| "127.0.0.1:9291".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("allow_server listening on {}", listener.local_addr()?);
    certbound::server::grpc_builder()
        .add_service(
            AuthorizationServer::new(AllowAll)
                .max_decoding_message_size(certbound::server::MAX_CHECK_REQUEST_BYTES),
        )
        .serve_with_incoming(certbound::server::incoming(listener))
        .await?;
    Ok(())
}
