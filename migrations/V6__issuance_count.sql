-- A refusal flood from one source address is folded into one summary row per (address, app,
-- outcome, minute): `count` says how many requests a row stands for (1 for every ordinary
-- row). A constant default is catalogue-only: no rewrite of the log's partitions.
ALTER TABLE issuance_log ADD COLUMN count INT NOT NULL DEFAULT 1 CHECK (count >= 1);
