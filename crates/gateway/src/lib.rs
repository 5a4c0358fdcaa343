//! JWT verification, the issuance service and the public HTTP API (arrives with the vending issue).
