// Grafana's ClickHouse data source, as far as ClickHouse sees it: the plugin
// (grafana-clickhouse-datasource, pkg/plugin/driver.go Connect) opens clickhouse-go v2 with
// these Options in HTTP mode (gzip compression, basic auth, default database, read timeout =
// query timeout), pings, asks version(), and runs each panel's rawSql after its template
// variables are substituted. This program does the same for every panel of the shipped
// dashboard JSON and its workspace variable, and prints one JSON line per query.
//
//	grafanaprobe ADDR USER PASSWORD DATABASE DASHBOARD.json WORKSPACE
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

type dashboard struct {
	Templating struct {
		List []struct {
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			RawSQL string `json:"rawSql"`
		} `json:"targets"`
	} `json:"panels"`
}

func main() {
	addr, user, password, database := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	path, workspace := os.Args[5], os.Args[6]
	db := clickhouse.OpenDB(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: database, Username: user, Password: password},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionGZIP},
		DialTimeout: 10 * time.Second,
		Protocol:    clickhouse.HTTP,
		ReadTimeout: 60 * time.Second,
		Settings:    clickhouse.Settings{},
		ClientInfo: clickhouse.ClientInfo{Products: []struct{ Name, Version string }{
			{Name: "grafana", Version: "12.2.0"}, {Name: "clickhouse-datasource", Version: "4.11.0"},
		}},
	})
	defer db.Close()
	ctx := context.Background()
	if err := db.PingContext(ctx); err != nil {
		fail("ping", err)
	}
	var version string
	if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&version); err != nil {
		fail("version", err)
	}
	emit(map[string]any{"version": version})
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("dashboard", err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		fail("dashboard", err)
	}
	for _, v := range d.Templating.List {
		emit(map[string]any{"variable": values(ctx, db, v.Query)})
	}
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			query := strings.ReplaceAll(t.RawSQL, "${workspace}", workspace)
			emit(map[string]any{"panel": p.Title, "rows": len(values(ctx, db, query))})
		}
	}
	_, err = db.ExecContext(ctx, "INSERT INTO events (event_id) VALUES ('grafana')")
	emit(map[string]any{"insert_error": fmt.Sprint(err)})
}

func values(ctx context.Context, db *sql.DB, query string) []string {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		fail(query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		cells := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range cells {
			ptrs[i] = &cells[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			fail(query, err)
		}
		out = append(out, fmt.Sprint(cells[0]))
	}
	if err := rows.Err(); err != nil {
		fail(query, err)
	}
	return out
}

func emit(v map[string]any) {
	line, _ := json.Marshal(v)
	fmt.Println(string(line))
}

func fail(what string, err error) {
	emit(map[string]any{"error": what, "message": err.Error()})
	os.Exit(1)
}
