/// The schema, as an append-only list of versioned migrations. Never edit a released migration: add one.
enum Migrations {
    struct Migration {
        let version: Int
        let summary: String
        let sql: String
    }

    /// Key of the transaction-scoped advisory lock that serialises migrations between daemons ("sluice" + 1).
    static let lockKey: Int64 = 0x736C_7569_6365_0001
    /// Key of the lock that serialises partition creation.
    static let partitionLockKey: Int64 = 0x736C_7569_6365_0002

    static let all: [Migration] = [
        Migration(
            version: 1, summary: "readings (daily partitions), producers, dead_letters, devices",
            sql: """
                CREATE TABLE readings (
                    time timestamptz NOT NULL,
                    device_id text NOT NULL,
                    metric text NOT NULL,
                    value float8 NOT NULL,
                    quality int4 NOT NULL DEFAULT 0,
                    site text,
                    unit text,
                    enrichment_partial bool NOT NULL DEFAULT false
                ) PARTITION BY RANGE (time);
                -- Catches any time outside the daily partitions, so no reading ever fails for lack of one.
                CREATE TABLE readings_default PARTITION OF readings DEFAULT;

                -- The whole dedup state: one row per producer, its highest committed batch seq (0 = none).
                CREATE TABLE producers (
                    producer_id uuid PRIMARY KEY,
                    committed_seq int8 NOT NULL DEFAULT 0,
                    updated_at timestamptz NOT NULL DEFAULT now()
                );

                CREATE TABLE dead_letters (
                    received_at timestamptz NOT NULL DEFAULT now(),
                    producer_id uuid NOT NULL,
                    seq int8 NOT NULL,
                    device_id text NOT NULL,
                    metric text NOT NULL,
                    time_us int8 NOT NULL,
                    value float8 NOT NULL,
                    quality int4 NOT NULL,
                    reason_code int4 NOT NULL,
                    reason text NOT NULL
                );
                CREATE INDEX dead_letters_producer_seq ON dead_letters (producer_id, seq);

                -- The device registry enrichment reads: calibrated value = raw × scale + offset.
                CREATE TABLE devices (
                    device_id text PRIMARY KEY,
                    site text,
                    scale float8 NOT NULL DEFAULT 1,
                    "offset" float8 NOT NULL DEFAULT 0,
                    unit text
                );

                -- Creates the daily partitions of readings from days_back before today (UTC) to days_ahead
                -- after it that do not exist yet; returns how many it created. Rows that already landed in
                -- the default partition for such a day are moved into the new partition.
                CREATE FUNCTION sluice_ensure_readings_partitions(days_back int, days_ahead int)
                RETURNS int LANGUAGE plpgsql AS $fn$
                DECLARE
                    today date := (now() AT TIME ZONE 'UTC')::date;
                    day date;
                    lower_bound timestamptz;
                    upper_bound timestamptz;
                    partition_name text;
                    created int := 0;
                BEGIN
                    PERFORM pg_advisory_xact_lock(\(partitionLockKey));
                    FOR offset_days IN -days_back .. days_ahead LOOP
                        day := today + offset_days;
                        partition_name := 'readings_p' || to_char(day, 'YYYYMMDD');
                        CONTINUE WHEN EXISTS (
                            SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE c.relname = partition_name AND n.nspname = current_schema());
                        lower_bound := day::timestamp AT TIME ZONE 'UTC';
                        upper_bound := (day + 1)::timestamp AT TIME ZONE 'UTC';
                        IF EXISTS (SELECT 1 FROM readings_default
                                   WHERE time >= lower_bound AND time < upper_bound) THEN
                            EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                                           partition_name);
                            EXECUTE format('WITH moved AS (DELETE FROM readings_default WHERE time >= $1 AND time < $2 '
                                           'RETURNING *) INSERT INTO %I SELECT * FROM moved', partition_name)
                                USING lower_bound, upper_bound;
                            EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                           partition_name, lower_bound, upper_bound);
                        ELSE
                            EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                                           partition_name, lower_bound, upper_bound);
                        END IF;
                        created := created + 1;
                    END LOOP;
                    RETURN created;
                END
                $fn$;
                """),
        // Version 2 is another change's (it merges in before this one); the migrator applies whichever
        // versions a database lacks, so the gap is harmless meanwhile.
        Migration(
            version: 3, summary: "producer_owners: the token that first claimed each producer id",
            sql: """
                -- A producer id belongs to the token that first said Hello with it (DESIGN §2); another token
                -- gets PERMISSION_DENIED. token_id is the token file's public id (8 hex digits of its hash).
                CREATE TABLE producer_owners (
                    producer_id uuid PRIMARY KEY,
                    token_id text NOT NULL,
                    claimed_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE INDEX producer_owners_token ON producer_owners (token_id);
                """),
    ]
}
