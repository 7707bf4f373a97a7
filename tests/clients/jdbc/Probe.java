// A stock JDBC program (the ClickHouse JDBC driver, as DBeaver uses it): run by
// test_clickhouse_http_clients.py as `java -cp 'libs/*' Probe.java URL USER PASSWORD TABLE WS N`.
// Prints one JSON line per read: {"rows": n, "distinct": d}, then how an insert was refused.
import java.sql.*;

public class Probe {
  public static void main(String[] a) throws Exception {
    String url = a[0], user = a[1], password = a[2], table = a[3], ws = a[4];
    int reads = Integer.parseInt(a[5]);
    try (Connection c = DriverManager.getConnection(url, user, password)) {
      DatabaseMetaData meta = c.getMetaData();
      System.out.println("{\"server\": \"" + meta.getDatabaseProductVersion() + "\"}");
      try (ResultSet tables = meta.getTables(null, null, "%", null)) {
        int n = 0;
        while (tables.next()) n++;
        System.out.println("{\"tables\": " + n + "}");
      }
      String sql = "SELECT count(), uniqExact(event_id) FROM " + table + " WHERE workspace_id = ?";
      try (PreparedStatement p = c.prepareStatement(sql)) {
        p.setString(1, ws);
        for (int i = 0; i < reads; i++) {
          try (ResultSet r = p.executeQuery()) {
            r.next();
            System.out.println("{\"rows\": " + r.getLong(1) + ", \"distinct\": " + r.getLong(2) + "}");
          }
          Thread.sleep(100);
        }
      }
      try (Statement s = c.createStatement()) {
        s.executeUpdate("INSERT INTO " + table + " (event_id, workspace_id) VALUES ('jdbc', '" + ws + "')");
        System.out.println("{\"insert\": \"accepted\"}");
      } catch (SQLException e) {
        System.out.println("{\"insert_refused\": " + e.getErrorCode() + "}");
      }
    }
  }
}
