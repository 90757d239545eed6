-- What a person called each token ("laptop"), so they can tell theirs apart.
ALTER TABLE personal_tokens ADD COLUMN description TEXT NOT NULL DEFAULT '';
