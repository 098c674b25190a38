-- The shared store of a gateway cluster, version 1. Secrets (auth, command) are sealed
-- with the cluster key before they get here (gateway/src/store/cipher.rs); tools are the
-- backend's definitions as text, exactly as it sent them.
CREATE TABLE instances (
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    weight INTEGER NOT NULL DEFAULT 1,
    call_timeout_ms BIGINT,
    tools TEXT NOT NULL,
    registered_at_ms BIGINT NOT NULL,
    owner TEXT,
    auth TEXT,
    command TEXT,
    PRIMARY KEY (name, url)
);

CREATE TABLE reservations (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);

CREATE TABLE virtual_servers (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);

-- Each replica's heartbeat; a replica is live while seen_ms is recent.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    host TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL
);

-- Facts about the cluster: a value sealed with the cluster key, so a replica started
-- with another key refuses to start rather than write secrets no other replica opens.
CREATE TABLE cluster (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
