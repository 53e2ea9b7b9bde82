/// The reason names (`CERTIFICATE_VERIFY_FAILED`, `WRONG_VERSION_NUMBER`) in a BoringSSL error description, in
/// order and without repeats: what both ends of a failed TLS handshake turn into words for a person.
public enum TLSReasonCodes {
    /// From text like `...:OPENSSL_internal:WRONG_VERSION_NUMBER at ...`.
    public static func codes(in text: String) -> [String] {
        var codes: [String] = []
        var rest = Substring(text)
        while let range = rest.range(of: "OPENSSL_internal:") {
            let code = rest[range.upperBound...].prefix { $0.isUppercase || $0.isNumber || $0 == "_" }
            if !code.isEmpty && !codes.contains(String(code)) { codes.append(String(code)) }
            rest = rest[range.upperBound...]
        }
        return codes
    }
}
