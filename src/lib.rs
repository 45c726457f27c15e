//! simple-api: a stateless JWT authentication service with a durable file-backed user store.
//!
//! Layers, each importing only from those below it (see the README's "Architecture"; the
//! `layers` test checks it): `cli` → `startup` (the server's life) → `api` → `service` →
//! `auth` → `store` → `domain`, with `config`, `audit`, `metrics`, `telemetry` and
//! `header_deadline` as leaves any layer may use.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod header_deadline;
pub mod mail;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod layers;
