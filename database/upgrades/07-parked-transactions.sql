-- v6 -> v7: Parked journal rows

-- Journalled transactions the indexer could not move into the log: the
-- database refused them for their data (retrying would fail for ever), or
-- they no longer parse. Kept whole with the error, so nothing the homeserver
-- was answered 200 for is lost; replayed by inserting them into txn_journal
-- again once the cause is fixed.
CREATE TABLE parked_transaction (
	seq         BIGINT PRIMARY KEY, -- the row's seq in txn_journal
	txn_id      TEXT   NOT NULL,
	received_at BIGINT NOT NULL, -- unix milliseconds
	body        TEXT   NOT NULL,
	error       TEXT   NOT NULL,
	parked_at   BIGINT NOT NULL  -- unix milliseconds
);
