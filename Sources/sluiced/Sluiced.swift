import ArgumentParser

/// `sluiced`: the ingest daemon, plus its token administration.
@main
struct Sluiced: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluiced",
        abstract: "The sluice ingest server: sensor batches from edge devices into PostgreSQL, exactly once.",
        discussion: """
            With no arguments it serves on 127.0.0.1:7878 and runs its own PostgreSQL cluster under \
            ./sluice-state (created on first start), so one command gets you a working system.

            Examples:
              # embedded PostgreSQL, loopback clients only:
              sluiced
              # your own database, listening on every interface:
              sluiced --database-url postgresql://sluice@db/telemetry --listen 0.0.0.0:7878
              # TLS on the ingest listener, for devices that cross the internet:
              sluiced --listen 0.0.0.0:7878 --tls-cert server.pem --tls-key server.key
              # settings from a file of "name = value" lines:
              sluiced --config /etc/sluice/sluiced.conf
              SLUICE_WRITERS=4 sluiced --state-dir /var/lib/sluice
              sluiced token create --prefix plant1. --name "gateway 3"
              sluiced token list
              sluiced token revoke 3f9a0c1d
              # psql on the embedded PostgreSQL (private to sluiced's user and root: no TCP):
              sluiced psql -- -c "SELECT count(*) FROM readings"

            All server flags: sluiced serve --help

            Every setting can come from a flag, an environment variable SLUICE_<NAME> (e.g. SLUICE_DATABASE_URL) \
            or a config file line "name = value"; a flag beats the environment, which beats the file. \
            SIGTERM drains (GoAway, last acks, exit 0); SIGHUP reloads the token file, the log level and the TLS \
            certificate and key (open connections stay up). Status and Prometheus metrics: \
            curl 127.0.0.1:7879/status, curl 127.0.0.1:7879/metrics.
            """,
        version: "0.1.0",
        subcommands: [Serve.self, TokenCommand.self, PsqlCommand.self],
        defaultSubcommand: Serve.self)
}
