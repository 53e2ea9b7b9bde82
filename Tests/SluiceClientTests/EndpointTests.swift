import Testing

@testable import SluiceClient

@Suite struct EndpointTests {
    @Test func hostPortAndBareHostsParse() throws {
        #expect(try Endpoint(parsing: "db-gw:7000") == Endpoint(host: "db-gw", port: 7000))
        #expect(try Endpoint(parsing: "10.0.0.5") == Endpoint(host: "10.0.0.5", port: 7878))
        #expect(try Endpoint(parsing: "[::1]:9") == Endpoint(host: "::1", port: 9))
        #expect(Endpoint(host: "::1", port: 9).description == "[::1]:9")
    }

    @Test func badAddressesSayWhatIsWrong() {
        #expect(throws: ClientError.self) { try Endpoint(parsing: "host:http") }
        #expect(throws: ClientError.self) { try Endpoint(parsing: "host:70000") }
        #expect(throws: ClientError.self) { try Endpoint(parsing: "::1:80") }
        #expect(throws: ClientError.self) { try Endpoint(parsing: "") }
    }
}
