-- What a certificate's generation (OCES2, OCES3, or other: neither) was
-- decided from: its own certificate policy OIDs ("policy OID
-- 1.2.208.169.1.1.1.3.7"), what the administrator said ("administrator said
-- --legacy"), or neither ("unknown: ..."). '' marks a row recorded before
-- this migration, when the generation was guessed from the subject: the
-- store decides such a row again from its PEM and source when it reads it.
ALTER TABLE certificates ADD COLUMN generation_basis TEXT NOT NULL DEFAULT '';
