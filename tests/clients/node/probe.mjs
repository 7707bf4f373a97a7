// A stock @clickhouse/client program: node probe.mjs URL USER PASSWORD TABLE WS N.
// Prints one JSON line per read ({"rows": n, "distinct": d}), then how an insert was refused.
import { createClient } from '@clickhouse/client'

const [url, username, password, table, ws, reads] = process.argv.slice(2)
const client = createClient({ url, username, password })
console.log(JSON.stringify({ ping: (await client.ping()).success }))
for (let i = 0; i < Number(reads); i++) {
  const result = await client.query({
    query: `SELECT count() AS rows, uniqExact(event_id) AS distinct FROM ${table} WHERE workspace_id = {ws:String}`,
    query_params: { ws },
    format: 'JSONEachRow',
  })
  const [row] = await result.json()
  console.log(JSON.stringify({ rows: Number(row.rows), distinct: Number(row.distinct) }))
  await new Promise((resolve) => setTimeout(resolve, 100))
}
try {
  await client.insert({ table, values: [{ event_id: 'node', workspace_id: ws }], format: 'JSONEachRow' })
  console.log(JSON.stringify({ insert: 'accepted' }))
} catch (e) {
  console.log(JSON.stringify({ insert_refused: Number(e.code) }))
}
await client.close()
