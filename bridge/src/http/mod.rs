//! What every HTTP feature is built from: a [`route::Route`] in the one table (with its OpenAPI
//! operation, [`openapi`]), the caller's [`access`], connection [`limits`], a bounded [`body`]
//! read only after authentication, and one JSON shape for every [`error`].

pub mod access;
pub mod body;
pub mod error;
pub mod limits;
pub mod openapi;
pub mod route;
