-- Outputs above the server's inline limit live in the artifact store;
-- this is their key there. NULL when the output is inline (or absent).
ALTER TABLE runs ADD COLUMN output_key TEXT;
