/// "Did you mean" for misspelt keys: a typo in a key would otherwise silently fall back to the
/// default, which is how a gateway ends up accepting TLS 1.2 when the operator asked for 1.3.
enum KeySuggestion {
    /// Typos further away than this are more likely a different word than a slip of the finger.
    static let maximumDistance = 2

    /// The known key closest to `key`, if one is close enough to be what was meant.
    static func closest(to key: String, among known: [String]) -> String? {
        let ranked = known.map { (candidate: $0, distance: distance($0, key)) }
            .filter { $0.distance <= maximumDistance }
        return ranked.min { $0.distance < $1.distance }?.candidate
    }

    /// Edit distance counting insertions, deletions, substitutions and swaps of two neighbouring
    /// characters as one edit each (optimal string alignment). Swaps count as one because
    /// "verison" for "version" is the typical typo, and plain Levenshtein would call it two.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        // d[i][j] = distance between the first i characters of a and the first j of b.
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[a.count][b.count]
    }
}
