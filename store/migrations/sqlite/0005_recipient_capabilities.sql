-- The S/MIME capabilities a harvested signer announced (SMIMECapabilities,
-- comma-separated, in its order of preference).
ALTER TABLE recipients ADD COLUMN capabilities TEXT;
