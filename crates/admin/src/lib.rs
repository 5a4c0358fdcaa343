//! stsgate's admin and auditor side. The pages arrive with the admin issue; for now this
//! crate holds password hashing, which `stsgate admin create-user` already needs.

pub mod password;
