-- Several companions on one database (issue 19 item 3; docs/DEPLOY.md).
--
-- leases: what must be done by one replica at a time takes the row of its name for a while: a
-- task (JWT secret rotation), renewed at each of its runs, or an agent's nonce lane while one
-- intent of it is built and submitted, deleted after; another replica takes a lease over only
-- once it has expired.
--   name        e.g. 'jwt-rotation', 'lane:<chain id>:<account>:<nonce key>'
--   holder      the replica holding it (a random id each companion process draws at start)
--   expires_at  unix seconds; past it any replica may take the lease
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

