// Drive @rudderstack/rudder-sdk-node, unmodified, against a collector.
//   node drive_rudder_node.mjs URL WRITE_KEY RUN_ID
// Prints one JSON object: the errors the SDK reported (callbacks and errorHandler).
import rudder from '@rudderstack/rudder-sdk-node'

const Analytics = rudder.default ?? rudder
const [url, writeKey, run] = process.argv.slice(2)
const errors = []
const analytics = new Analytics(writeKey, {
  dataPlaneUrl: url,
  retryCount: 2,
  errorHandler: (e) => errors.push(String(e?.response?.status ?? e)),
})
const anon = `anon-${run}`
const lead = `lead-${run}`
const originalTimestamp = new Date('2026-03-01T11:00:00Z')
const sent = (err) => { if (err) errors.push(String(err)) }
const ids = (name) => ({ messageId: `${run}-${name}`, originalTimestamp })
analytics.page({ anonymousId: anon, name: 'Pricing', ...ids('page'),
  properties: { url: 'https://acme.example/pricing?utm_source=google&utm_medium=cpc',
    path: '/pricing' } }, sent)
analytics.track({ anonymousId: anon, event: 'Form Submitted', ...ids('form'),
  properties: { form_id: 'demo', email: `${run}@acme.example`, company_size: '51-200' } }, sent)
// The SDK copies identify traits into context.traits as well.
analytics.identify({ userId: lead, anonymousId: anon, ...ids('identify'),
  traits: { email: `${run}@acme.example`, firstName: 'Ada', title: 'CTO',
    company: { name: 'Acme', employee_count: 120, industry: 'Software' } } }, sent)
analytics.alias({ userId: lead, previousId: anon, ...ids('alias') }, sent)
analytics.group({ userId: lead, groupId: 'acme', ...ids('group'),
  traits: { name: 'Acme', employees: '51-200', address: { country: 'DE' } } }, sent)
analytics.track({ userId: lead, event: 'Stage Changed', ...ids('stage'),
  properties: { stage: 'Sales Qualified Lead' } }, sent)
analytics.track({ userId: lead, event: 'Deal Won', ...ids('deal'),
  properties: { deal_id: 'd-1', revenue: 12000, currency: 'EUR' } }, sent)
// One bad event in the same batch: refused alone, the others stored.
analytics.track({ userId: lead, event: 'Deal Won', ...ids('bad'),
  properties: { amount: 'a lot' } }, sent)
await analytics.flush().catch((e) => errors.push(`flush: ${e}`))
console.log(JSON.stringify({ errors }))
