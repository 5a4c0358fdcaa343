//! Admin and auditor web pages (arrives with the admin issue).
