import SwiftProtobuf

// Short names for the generated wire types (proto/sluice/v1/sluice.proto is their documentation).
public typealias ClientFrame = Sluice_V1_ClientFrame
public typealias ServerFrame = Sluice_V1_ServerFrame
public typealias Hello = Sluice_V1_Hello
public typealias Welcome = Sluice_V1_Welcome
public typealias Batch = Sluice_V1_Batch
public typealias Series = Sluice_V1_Series
public typealias Ack = Sluice_V1_Ack
public typealias Rejection = Sluice_V1_Rejection
public typealias RejectCode = Sluice_V1_RejectCode
public typealias Credit = Sluice_V1_Credit
public typealias CreditRequest = Sluice_V1_CreditRequest
public typealias CreditRecall = Sluice_V1_CreditRecall
public typealias CreditReturn = Sluice_V1_CreditReturn
public typealias ErrorFrame = Sluice_V1_Error
public typealias Ping = Sluice_V1_Ping
public typealias Pong = Sluice_V1_Pong
public typealias GoAway = Sluice_V1_GoAway
public typealias StatusCode = Sluice_V1_StatusCode
public typealias Compression = Sluice_V1_Compression

/// The protocol version this build speaks.
public let sluiceProtocolVersion: UInt32 = 1

/// The 4 bytes a client sends first on every connection.
public let sluicePreface: [UInt8] = Array("SLU1".utf8)

extension StatusCode {
    /// The upper-case name used in logs and error messages, e.g. `PROTOCOL_ERROR`.
    public var name: String {
        switch self {
        case .ok: "OK"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .unauthenticated: "UNAUTHENTICATED"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .unavailable: "UNAVAILABLE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .protocolError: "PROTOCOL_ERROR"
        case .frameTooLarge: "FRAME_TOO_LARGE"
        case .UNRECOGNIZED(let raw): "STATUS_\(raw)"
        }
    }
}

extension ServerFrame {
    /// A server frame holding `kind`.
    public init(_ kind: OneOf_Kind) {
        self.init()
        self.kind = kind
    }

    /// An `Error` frame for `error`.
    public static func error(_ error: WireError, seq: UInt64 = 0, closing: Bool) -> ServerFrame {
        var frame = ErrorFrame()
        frame.code = error.code
        frame.message = error.message
        frame.seq = seq
        frame.closing = closing
        return ServerFrame(.error(frame))
    }
}

extension ClientFrame {
    /// A client frame holding `kind`.
    public init(_ kind: OneOf_Kind) {
        self.init()
        self.kind = kind
    }
}
