// Drive @segment/analytics-node, unmodified, against a collector.
//   node drive_node.mjs URL WRITE_KEY RUN_ID
// Prints one JSON object: the errors the SDK emitted and the HTTP statuses it saw.
import { Analytics } from '@segment/analytics-node'

const [url, writeKey, run] = process.argv.slice(2)
const errors = []
const statuses = []
const analytics = new Analytics({ writeKey, host: url, maxRetries: 2, flushInterval: 200 })
analytics.on('error', (e) => errors.push(String(e.reason ?? e.code)))
analytics.on('http_response', (r) => statuses.push(r.status))
const anon = `anon-${run}`
const lead = `lead-${run}`
const timestamp = new Date('2026-03-01T11:00:00Z')
analytics.page({ anonymousId: anon, name: 'Pricing', timestamp, messageId: `${run}-page`,
  properties: { url: 'https://acme.example/pricing', path: '/pricing' } })
analytics.track({ anonymousId: anon, event: 'Form Submitted', timestamp, messageId: `${run}-form`,
  properties: { form_id: 'demo', email: `${run}@acme.example`, company_size: '1000+' } })
analytics.identify({ userId: lead, anonymousId: anon, timestamp, messageId: `${run}-identify`,
  traits: { email: `${run}@acme.example`, title: 'VP Sales', employees: '250' } })
analytics.alias({ userId: lead, previousId: anon, timestamp, messageId: `${run}-alias` })
analytics.group({ userId: lead, groupId: 'acme', timestamp, messageId: `${run}-group`,
  traits: { name: 'Acme', industry: 'Software' } })
analytics.track({ userId: lead, event: 'Stage Changed', timestamp, messageId: `${run}-stage`,
  properties: { stage: 'sql' } })
// One bad event in the same batch: refused alone, the others stored.
analytics.track({ userId: lead, event: 'Deal Won', timestamp, messageId: `${run}-bad`,
  properties: { amount: 'a lot' } })
await analytics.closeAndFlush({ timeout: 30000 })
console.log(JSON.stringify({ errors, statuses }))
