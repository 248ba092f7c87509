-- Where a token came from: `config` (a `[tenants.NAME] tokens` entry,
-- revoked at start-up once it is gone from the file) or `api` (minted with
-- POST /v1/tenants/{name}/tokens, revoked only through the API).
ALTER TABLE api_tokens ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
