-- A secret set or deleted is announced, so replicas drop their decrypted copies at once.
CREATE FUNCTION borealis_notify_secret() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('borealis_' || left(md5(current_schema()), 16), 'secret:' || OLD.name);
    ELSE
        PERFORM pg_notify('borealis_' || left(md5(current_schema()), 16), 'secret:' || NEW.name);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH ROW EXECUTE FUNCTION borealis_notify_secret();
