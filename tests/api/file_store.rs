//! The contract's suite on the file store (the default).

suite!(crate::helpers::Backend::File);
