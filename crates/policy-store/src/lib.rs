//! Postgres repository, migrations, policy templates and secret encryption (arrives with the vending issue).
