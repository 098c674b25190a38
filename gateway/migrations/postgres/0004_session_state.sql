-- Version 4: what a shared session's client set after `initialize`, and the answers it
-- sent to a replica other than the one that asked.
--
-- A session's log level (`logging/setLevel`) and resource subscriptions
-- (`resources/subscribe`) hold on every replica that serves it: they are its row's.
ALTER TABLE mcp_sessions ADD COLUMN level TEXT;
ALTER TABLE mcp_sessions ADD COLUMN subscriptions TEXT[] NOT NULL DEFAULT '{}';

-- A client's answer to a request one replica sent it during a call (sampling,
-- elicitation, roots) that reached another replica: held here until the asking replica
-- (`replica`, its id) takes it, which it does as soon as it hears of it. Rows of
-- replicas that died are swept a minute later.
CREATE TABLE mcp_answers (
    id BIGSERIAL PRIMARY KEY,
    replica TEXT NOT NULL,
    session TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL DEFAULT gateway_now_ms()
);
CREATE INDEX mcp_answers_replica ON mcp_answers (replica);
