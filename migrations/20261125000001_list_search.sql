-- Searching users by any part of their name or address (`q` on the user
-- lists): `ILIKE '%...%'` can use a trigram index instead of reading every
-- row. pg_trgm ships with PostgreSQL (contrib).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_name_trgm ON users USING gin (name gin_trgm_ops);
CREATE INDEX users_email_trgm ON users USING gin (email gin_trgm_ops);
-- The organization list counts each organization's users.
CREATE INDEX users_organization_id ON users (organization_id);
