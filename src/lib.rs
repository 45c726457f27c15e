//! simple-api: a stateless JWT authentication service with a durable file-backed user store.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod slowloris;
pub mod startup;
pub mod store;
pub mod telemetry;
