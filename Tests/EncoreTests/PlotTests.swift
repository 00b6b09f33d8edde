import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Encore

/// Counts elements by name while checking the document parses as XML.
final class ElementCounter: NSObject, XMLParserDelegate {
    var counts: [String: Int] = [:]
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        counts[name, default: 0] += 1
    }
}

final class PlotTests: XCTestCase {
    /// The SVG is well-formed XML, has one polyline per series with one point per length, and escapes text.
    func testSVGLineChart() throws {
        let chart = SVGLineChart(title: "a < b & c", xLabel: "input tokens", yLabel: "seconds", series: [
            .init(name: "enc-dec", color: "#1f77b4", points: [(128, 0.2), (512, 0.9), (2048, 4.1)]),
            .init(name: "decoder-only", color: "#d62728", dashed: true, points: [(128, 0.3), (512, 1.5), (2048, 7.0)]),
        ])
        let svg = chart.render()
        let parser = XMLParser(data: Data(svg.utf8))
        let counter = ElementCounter()
        parser.delegate = counter
        XCTAssertTrue(parser.parse(), "well-formed XML")
        XCTAssertEqual(counter.counts["polyline"], 2)
        XCTAssertEqual(counter.counts["circle"], 6)
        XCTAssertTrue(svg.contains("a &lt; b &amp; c"))
        XCTAssertEqual(chart.niceCeiling(7.0), 8)
        XCTAssertEqual(chart.niceCeiling(0.9), 1)
    }
}
