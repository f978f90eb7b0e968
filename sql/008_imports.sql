-- import.contacts 1.2.0: the encoding and delimiter an import was read with
-- (the ones in effect: a byte-order mark overrides the payload's encoding,
-- delimiter "auto" is decided from the first line).
ALTER TABLE app.imports ADD COLUMN encoding text, ADD COLUMN delimiter text;
