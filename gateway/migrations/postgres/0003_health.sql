-- Version 3: upstream health as the cluster's health checker sees it. One replica at a
-- time (the holder of an advisory lock on its listening connection) pings upstreams and
-- writes each instance's state here when it changes; the others follow it, so every
-- replica agrees on an upstream's state and upstreams are not pinged N times.
CREATE TABLE upstream_health (
    service TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    why TEXT,
    at_ms BIGINT NOT NULL DEFAULT gateway_now_ms(),
    PRIMARY KEY (service, url)
);
