//! A real OTLP/gRPC trace receiver (a tonic server on the OpenTelemetry protocol types) that
//! keeps every span it is sent: for the trace test and the tracing-overhead bench.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tonic::{Request, Response, Status};

/// The spans received so far.
#[derive(Clone, Default)]
pub struct Collector(pub Arc<Mutex<Vec<Span>>>);

impl Collector {
    /// Serves on a free loopback port: the collector, its address, and the server task
    /// (abort it when done).
    pub async fn start() -> (Self, SocketAddr, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Self::default();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, addr, server)
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("spans").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = req.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().expect("spans").extend(spans);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}
