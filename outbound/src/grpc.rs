//! The `Outbound` gRPC service: the HTTP API's operations for services that speak gRPC.
//! Credentials are checked from the call's metadata by an interceptor, before tonic decodes
//! its message; messages are capped at 64 KiB.

use std::sync::Arc;

use switchyard::{
    auth::{AuthError, Principal, Role, Verifier, bearer},
    names::Tenant,
    proto::v1::{
        self as pb, CreateEndpointRequest, CreateEndpointResponse, DeleteEndpointResponse, EndpointRef, EndpointStatus,
        ListDeadLettersResponse, ListEndpointsRequest, ListEndpointsResponse, OwedResponse, ReplayRequest,
        RotateSecretResponse,
        outbound_server::{Outbound as Api, OutboundServer},
    },
};
use tonic::{Request, Response, Status};

use crate::{OutboundError, Replay, Spec, View, service::Outbound};

/// Largest request message: an endpoint spec is well under a kilobyte.
const MAX_MESSAGE: usize = 64 * 1024;

fn auth_status(e: &AuthError) -> Status {
    if e.unauthenticated() { Status::unauthenticated(e.to_string()) } else { Status::permission_denied(e.to_string()) }
}

fn status(e: OutboundError) -> Status {
    match &e {
        OutboundError::Invalid(_) | OutboundError::TooMany(_) => Status::invalid_argument(e.to_string()),
        OutboundError::NotFound(_) => Status::not_found(e.to_string()),
        OutboundError::Static(_) => Status::failed_precondition(e.to_string()),
        OutboundError::Store(_) => Status::unavailable("the store is unavailable; retry shortly"),
    }
}

/// Admits admins only, from the call's metadata (before its message is decoded), and puts
/// their [`Principal`] in the request's extensions.
#[derive(Clone)]
pub struct Admins(pub Arc<Verifier>);

impl tonic::service::Interceptor for Admins {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = req.metadata().get("authorization").ok_or_else(|| auth_status(&AuthError::Missing))?;
        let token = value.to_str().ok().and_then(bearer).ok_or_else(|| auth_status(&AuthError::Missing))?;
        let who = self.0.verify(token).map_err(|e| auth_status(&e))?;
        who.require(Role::Admin).map_err(|e| auth_status(&e))?;
        req.extensions_mut().insert(who);
        Ok(req)
    }
}

/// The service as served: behind [`Admins`], messages capped.
pub type Server = tonic::service::interceptor::InterceptedService<OutboundServer<Service>, Admins>;

pub fn server(outbound: Outbound, verifier: Arc<Verifier>) -> Server {
    let inner = OutboundServer::new(Service(outbound)).max_decoding_message_size(MAX_MESSAGE);
    tonic::service::interceptor::InterceptedService::new(inner, Admins(verifier))
}

pub struct Service(Outbound);

/// The tenant a call acts for: the token's, or the one a system token names.
fn tenant<T>(req: &Request<T>, named: &str) -> Result<Tenant, Status> {
    let who = req.extensions().get::<Principal>().ok_or_else(|| auth_status(&AuthError::Missing))?;
    who.resolve_tenant(named)
        .map_err(|e| auth_status(&e))?
        .ok_or_else(|| Status::invalid_argument("tenant: name one tenant"))
}

fn spec(s: pb::EndpointSpec) -> Spec {
    let text = |v: String| (!v.is_empty()).then_some(v);
    Spec {
        kind: text(s.kind).unwrap_or_else(|| "webhook".into()),
        url: text(s.url),
        to: s.to,
        types: s.types,
        channels: s.channels,
        filter: text(s.filter),
        rate_per_sec: (s.rate_per_sec > 0).then_some(s.rate_per_sec),
        ordered: s.ordered,
        start: text(s.start),
        description: s.description,
    }
}

fn status_of(v: View) -> EndpointStatus {
    let s = v.spec;
    EndpointStatus {
        id: v.id.to_string(),
        spec: Some(pb::EndpointSpec {
            kind: s.kind,
            url: s.url.unwrap_or_default(),
            to: s.to,
            types: s.types,
            channels: s.channels,
            filter: s.filter.unwrap_or_default(),
            rate_per_sec: s.rate_per_sec.unwrap_or(0),
            ordered: s.ordered,
            start: s.start.unwrap_or_default(),
            description: s.description,
        }),
        state: v.state.into(),
        cursor: v.cursor.0,
        lag: v.lag,
        owed: v.owed as u64,
        delivered: v.delivered,
        failed_attempts: v.failed_attempts,
        dead_lettered: v.dead_lettered,
        lost_to_retention: v.lost_to_retention,
        last_error: v.last_error,
        disabled_reason: v.disabled.map(|d| d.reason).unwrap_or_default(),
        created_ms: v.created_ms,
    }
}

#[tonic::async_trait]
impl Api for Service {
    async fn create_endpoint(
        &self,
        req: Request<CreateEndpointRequest>,
    ) -> Result<Response<CreateEndpointResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        let s = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
        let (view, secret) = self.0.create(&t, spec(s)).await.map_err(status)?;
        Ok(Response::new(CreateEndpointResponse { endpoint: Some(status_of(view)), secret }))
    }

    async fn list_endpoints(
        &self,
        req: Request<ListEndpointsRequest>,
    ) -> Result<Response<ListEndpointsResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        let endpoints = self.0.list(&t).await.map_err(status)?.into_iter().map(status_of).collect();
        Ok(Response::new(ListEndpointsResponse { endpoints }))
    }

    async fn get_endpoint(&self, req: Request<EndpointRef>) -> Result<Response<EndpointStatus>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        Ok(Response::new(status_of(self.0.get(&t, &req.get_ref().id).await.map_err(status)?)))
    }

    async fn delete_endpoint(&self, req: Request<EndpointRef>) -> Result<Response<DeleteEndpointResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        self.0.delete(&t, &req.get_ref().id).await.map_err(status)?;
        Ok(Response::new(DeleteEndpointResponse {}))
    }

    async fn enable_endpoint(&self, req: Request<EndpointRef>) -> Result<Response<EndpointStatus>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        Ok(Response::new(status_of(self.0.enable(&t, &req.get_ref().id).await.map_err(status)?)))
    }

    async fn rotate_secret(&self, req: Request<EndpointRef>) -> Result<Response<RotateSecretResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        let secret = self.0.rotate(&t, &req.get_ref().id).await.map_err(status)?;
        Ok(Response::new(RotateSecretResponse { secret }))
    }

    async fn list_dead_letters(&self, req: Request<EndpointRef>) -> Result<Response<ListDeadLettersResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        let dead = self.0.dead_letters(&t, &req.get_ref().id, 10_000).await.map_err(status)?;
        let dead_letters = dead
            .into_iter()
            .map(|d| pb::DeadLetter {
                id: d.id.0,
                r#type: d.r#type,
                attempts: d.attempts,
                last_error: d.last_error,
                at_ms: d.at_ms,
            })
            .collect();
        Ok(Response::new(ListDeadLettersResponse { dead_letters }))
    }

    async fn redrive(&self, req: Request<EndpointRef>) -> Result<Response<OwedResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        let owed = self.0.redrive(&t, &req.get_ref().id).await.map_err(status)?;
        Ok(Response::new(OwedResponse { owed: owed as u64 }))
    }

    async fn replay(&self, req: Request<ReplayRequest>) -> Result<Response<OwedResponse>, Status> {
        let t = tenant(&req, &req.get_ref().tenant)?;
        let r = req.into_inner();
        if r.event_id > 0 {
            self.0.resend(&t, &r.id, r.event_id).await.map_err(status)?;
            return Ok(Response::new(OwedResponse { owed: 1 }));
        }
        let nonzero = |v: u64| (v > 0).then_some(v);
        let range = Replay {
            after_id: (r.since_ms == 0).then_some(r.after_id),
            to_id: nonzero(r.to_id),
            since_ms: nonzero(r.since_ms),
            until_ms: nonzero(r.until_ms),
        };
        let owed = self.0.replay(&t, &r.id, range).await.map_err(status)?;
        Ok(Response::new(OwedResponse { owed: owed as u64 }))
    }
}
