import SluiceProtocol
import Testing

@testable import SluiceCore

@Suite struct TokenTableTests {
    func table() -> (TokenTable, String) {
        var rng = SplitMix64(seed: 7)
        let (token, entry) = TokenTable.makeToken(devicePrefix: "plant1.", name: "gateway 3", createdAt: 1_700_000_000, using: &rng)
        return (TokenTable(entries: [entry]), token)
    }

    @Test func fileRoundTripsThroughItsText() throws {
        let (t, _) = table()
        var other = t
        other.entries.append(TokenEntry(id: "abcd1234", hashHex: String(repeating: "0", count: 64), devicePrefix: "", createdAt: 5, name: ""))
        #expect(try TokenTable(parsing: other.serialized()) == other)
    }

    @Test func storedEntryHoldsTheHashNotTheToken() {
        let (t, token) = table()
        #expect(token.hasPrefix("slu_"))
        #expect(t.entries[0].hashHex == SHA256.hexDigest(token))
        #expect(!t.serialized().contains(token))
    }

    @Test func validTokenIsAllowedWithItsScope() {
        let (t, token) = table()
        #expect(t.authorize(token: token, peerIsLoopback: false) == .allowed(devicePrefix: "plant1.", tokenID: t.entries[0].id))
    }

    @Test func unknownTokenIsUnauthenticated() {
        let (t, _) = table()
        guard case .denied(let e) = t.authorize(token: "slu_nope", peerIsLoopback: true) else {
            Issue.record("expected denial")
            return
        }
        #expect(e.code == .unauthenticated)
    }

    @Test func missingTokenIsUnauthenticatedWhenTokensAreConfigured() {
        let (t, _) = table()
        guard case .denied(let e) = t.authorize(token: "", peerIsLoopback: true) else {
            Issue.record("expected denial")
            return
        }
        #expect(e.message.contains("requires a token"))
    }

    @Test func withNoTokensOnlyLoopbackClientsAreAllowed() {
        let empty = TokenTable()
        #expect(empty.authorize(token: "", peerIsLoopback: true) == .allowed(devicePrefix: "", tokenID: nil))
        guard case .denied(let e) = empty.authorize(token: "", peerIsLoopback: false) else {
            Issue.record("expected denial")
            return
        }
        #expect(e.code == .unauthenticated && e.message.contains("loopback clients only"))
    }

    @Test func malformedLineIsReportedWithItsNumber() {
        #expect(throws: TokenFileError(line: 2, reason: "\"xyz\" is not a SHA-256 hex digest (64 hex digits)")) {
            try TokenTable(parsing: "# comment\nid xyz * 1\n")
        }
    }

    @Test func commentsAndBlankLinesAreIgnored() throws {
        #expect(try TokenTable(parsing: "\n# nothing\n   \n").entries.isEmpty)
    }
}
