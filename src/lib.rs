pub mod auth;
pub mod domain;
pub mod store;
