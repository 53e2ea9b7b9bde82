import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// One daemon's `/status`, or why it could not be had.
public struct DaemonStatus: Sendable {
    /// The `host:port` asked.
    public var address: String
    public var outcome: Outcome
    /// How long the answer (or failure) took.
    public var elapsed: Duration

    public enum Outcome: Sendable {
        /// The JSON object the daemon returned, as text, and its fields decoded.
        case ok(json: String, report: StatusReport)
        case failed(String)
    }
}

/// The fields of sluiced's `GET /status` JSON (all optional: an older or newer daemon may lack some).
public struct StatusReport: Sendable, Decodable, Equatable {
    public var version: String?
    public var uptimeSeconds: Double?
    public var listen: String?
    public var connections: Int?
    public var batchesAccepted: Int?
    public var batchesDuplicate: Int?
    public var batchesRejected: Int?
    public var readingsAccepted: Int?
    public var readingsRejected: Int?
    public var queueDepthReadings: Int?
    public var creditHeldReadings: Int?
    public var commitLatencyP99Ms: Double?
    public var database: String?

    enum CodingKeys: String, CodingKey {
        case version, listen, connections, database
        case uptimeSeconds = "uptime_seconds"
        case batchesAccepted = "batches_accepted"
        case batchesDuplicate = "batches_duplicate"
        case batchesRejected = "batches_rejected"
        case readingsAccepted = "readings_accepted"
        case readingsRejected = "readings_rejected"
        case queueDepthReadings = "queue_depth_readings"
        case creditHeldReadings = "credit_held_readings"
        case commitLatencyP99Ms = "commit_latency_p99_ms"
    }
}

/// Fetches `/status` from daemons over HTTP/1.1, each under its own deadline.
public enum StatusFetcher {
    /// Asks every address concurrently; returns one entry per address, in the order given, within about
    /// `deadline` whatever the daemons do (a dead or silent one becomes a `.failed` entry).
    public static func fetchAll(_ addresses: [Endpoint], deadline: Duration, path: String = "/status") async
        -> [DaemonStatus]
    {
        await withTaskGroup(of: (Int, DaemonStatus).self) { group in
            for (i, address) in addresses.enumerated() {
                group.addTask { (i, await fetch(address, deadline: deadline, path: path)) }
            }
            var results = [DaemonStatus?](repeating: nil, count: addresses.count)
            for await (i, status) in group { results[i] = status }
            return results.map { $0! }
        }
    }

    /// One daemon's status.
    public static func fetch(_ address: Endpoint, deadline: Duration, path: String = "/status") async -> DaemonStatus {
        let start = ContinuousClock.now
        let outcome: DaemonStatus.Outcome
        do {
            let (status, body) = try await get(address, path: path, deadline: deadline)
            guard status == 200 else {
                throw FetchError("HTTP \(status) from \(path): \(String(decoding: body.prefix(200), as: UTF8.self))")
            }
            do {
                let report = try JSONDecoder().decode(StatusReport.self, from: Data(body))
                outcome = .ok(json: String(decoding: body, as: UTF8.self), report: report)
            } catch {
                throw FetchError("\(path) did not return sluiced's status JSON: \(String(decoding: body.prefix(200), as: UTF8.self))")
            }
        } catch let error as FetchError {
            outcome = .failed(error.message)
        } catch ChannelError.connectTimeout(_) {
            outcome = .failed("no connection within \(deadline)")
        } catch {
            outcome = .failed(describe(error))
        }
        return DaemonStatus(address: address.description, outcome: outcome, elapsed: ContinuousClock.now - start)
    }

    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("connection reset") || text.contains("ECONNREFUSED") || text.contains("Connection refused") {
            return "connection refused: is sluiced running with --http on this address?"
        }
        return text
    }

    struct FetchError: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    private static func get(_ address: Endpoint, path: String, deadline: Duration) async throws -> (Int, [UInt8]) {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let promise = loop.makePromise(of: (Int, [UInt8]).self)
        let nanos = Int64(deadline.seconds * 1e9)
        let timer = loop.scheduleTask(in: .nanoseconds(nanos)) {
            promise.fail(FetchError("no answer within \(deadline)"))
        }
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(nanos))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        bootstrap.connect(host: address.host, port: address.port).whenComplete { result in
            switch result {
            case .failure(let error):
                promise.fail(error)
            case .success(let channel):
                var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
                head.headers.add(name: "Host", value: address.description)
                head.headers.add(name: "Accept", value: "application/json")
                head.headers.add(name: "Connection", value: "close")
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }
}

/// Collects one HTTP response.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<(Int, [UInt8])>
    private var status = 0
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<(Int, [UInt8])>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(var buffer):
            if body.count < 1 << 20 { body += buffer.readBytes(length: buffer.readableBytes) ?? [] }
        case .end: promise.succeed((status, body))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(StatusFetcher.FetchError("the daemon closed the connection before answering"))
    }
}

@available(*, unavailable)
extension ResponseCollector: Sendable {}
