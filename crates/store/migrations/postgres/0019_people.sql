-- People signed in through the identity provider: roles in teams bound to
-- a person (by the provider's subject) or to a group the provider names.
CREATE TABLE role_bindings (
    id           TEXT COLLATE "C" PRIMARY KEY,
    team         TEXT COLLATE "C" NOT NULL REFERENCES teams (name),
    subject_kind TEXT COLLATE "C" NOT NULL CHECK (subject_kind IN ('user', 'group')),
    subject      TEXT COLLATE "C" NOT NULL,
    role         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (team, subject_kind, subject, role)
);
-- A person's bindings at sign-in: theirs, and their groups'.
CREATE INDEX role_bindings_by_subject ON role_bindings (subject_kind, subject);

-- A console session signed in as a person: who, as the provider vouched
-- for them (groups as a JSON array of names). NULL: the admin token, as
-- every session stored before. Nullable columns add without a rewrite.
ALTER TABLE console_sessions ADD COLUMN person_subject TEXT;
ALTER TABLE console_sessions ADD COLUMN person_name TEXT;
ALTER TABLE console_sessions ADD COLUMN person_groups TEXT;
