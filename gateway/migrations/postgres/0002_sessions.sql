-- Version 2: MCP sessions any replica serves. A row per session opened with
-- `initialize` on any replica: its owner, its endpoint (a virtual server, or NULL for
-- /mcp), the client's initialize parameters (what another replica replays to adopt it),
-- and the times every replica's idle expiry reads (the database's clock, not the
-- replicas'). An ended session is a missing row.
CREATE FUNCTION gateway_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS
    $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;

CREATE TABLE mcp_sessions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    server TEXT,
    init TEXT NOT NULL,
    confirmed BOOLEAN NOT NULL DEFAULT false,
    created_ms BIGINT NOT NULL DEFAULT gateway_now_ms(),
    last_used_ms BIGINT NOT NULL DEFAULT gateway_now_ms()
);
CREATE INDEX mcp_sessions_owner ON mcp_sessions (owner);
CREATE INDEX mcp_sessions_last_used ON mcp_sessions (last_used_ms);
