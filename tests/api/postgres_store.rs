//! The contract's suite on PostgreSQL: the same bodies as `file_store`.

suite!(crate::helpers::Backend::Postgres);
