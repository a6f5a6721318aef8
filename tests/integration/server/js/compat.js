#!/usr/bin/env node
// kafkajs 2.2.4 against `headwater serve`, driven by test_kafkajs.py.
//
// Usage: node compat.js COMMAND '<json arguments>'
// Prints one JSON object on stdout (logs go to stderr) and exits 0, or prints
// {"error": "..."} and exits 1. Every command gives up after `timeoutMs`.
//
// Binary keys, values and header values travel as base64 strings (null stays null).
'use strict'

const fs = require('fs')
const { Kafka, CompressionTypes, Partitioners, logLevel } = require('kafkajs')

const toStderr = () => ({ namespace, level, log }) => {
  const { message, ...extra } = log
  process.stderr.write(`[${logLevel[level] || level}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`)
}

const b64 = buffer => (buffer == null ? null : Buffer.from(buffer).toString('base64'))
const unb64 = text => (text == null ? null : Buffer.from(text, 'base64'))

function client(args) {
  return new Kafka({
    brokers: [args.bootstrap],
    clientId: 'headwater-compat',
    logLevel: logLevel.WARN,
    logCreator: toStderr,
    retry: { retries: 10, initialRetryTime: 100 },
  })
}

function consumerOf(kafka, groupId) {
  return kafka.consumer({
    groupId,
    sessionTimeout: 6000,
    heartbeatInterval: 500,
    rebalanceTimeout: 10000,
    maxWaitTimeInMs: 200,
  })
}

async function until(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

// Create the topic (when `partitions` is given) and send the messages of `file`
// (a JSON list of {key, value, headers}) in batches, idempotently, with acks=all.
async function produce(args) {
  const kafka = client(args)
  if (args.partitions) {
    const admin = kafka.admin()
    await admin.connect()
    const created = await admin.createTopics({
      topics: [{ topic: args.topic, numPartitions: args.partitions, replicationFactor: 1 }],
      waitForLeaders: true,
    })
    await admin.disconnect()
    if (!created) throw new Error(`topic ${args.topic} already existed`)
  }
  const messages = JSON.parse(fs.readFileSync(args.file)).map(m => ({
    key: unb64(m.key),
    value: unb64(m.value),
    headers: Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, unb64(v)])),
  }))
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner, // murmur2, as the Java client
  })
  await producer.connect()
  const compression = args.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None
  const results = []
  const batch = args.batch || 500
  for (let i = 0; i < messages.length; i += batch) {
    const sent = await producer.send({
      topic: args.topic,
      acks: -1,
      compression,
      messages: messages.slice(i, i + batch),
    })
    for (const r of sent) {
      results.push({ partition: r.partition, baseOffset: Number(r.baseOffset), error: r.errorCode })
    }
  }
  await producer.disconnect()
  return { results }
}

// Consume `count` messages in group `group`, commit them, and report the messages and
// the group's committed offsets as read back with the admin client.
async function consume(args) {
  const kafka = client(args)
  const consumer = consumerOf(kafka, args.group)
  const messages = []
  const next = {}
  await consumer.connect()
  await consumer.subscribe({ topic: args.topic, fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      messages.push({
        partition,
        offset: Number(message.offset),
        key: b64(message.key),
        value: b64(message.value),
        headers: Object.fromEntries(
          Object.entries(message.headers || {}).map(([k, v]) => [k, b64(v)])
        ),
      })
      next[partition] = Number(message.offset) + 1
    },
  })
  await until(() => messages.length >= args.count, args.timeoutMs, `${args.count} messages`)
  // Anything beyond `count` that is already in flight is reported too: the test decides.
  await consumer.commitOffsets(
    Object.entries(next).map(([partition, offset]) => ({
      topic: args.topic,
      partition: Number(partition),
      offset: String(offset),
    }))
  )
  await consumer.disconnect()
  const admin = kafka.admin()
  await admin.connect()
  const [committed] = await admin.fetchOffsets({ groupId: args.group, topics: [args.topic] })
  const groups = await admin.describeGroups([args.group])
  await admin.disconnect()
  return {
    messages,
    committed: committed.partitions.map(p => ({ partition: p.partition, offset: Number(p.offset) })),
    group: { state: groups.groups[0].state, protocolType: groups.groups[0].protocolType },
  }
}

// Three members of one group over a topic of `partitions` partitions: report each
// member's assignment once the group is stable, then again after one leaves.
async function group(args) {
  const kafka = client(args)
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({
    topics: [{ topic: args.topic, numPartitions: args.partitions, replicationFactor: 1 }],
    waitForLeaders: true,
  })
  await admin.disconnect()
  const members = [0, 1, 2].map(() => consumerOf(kafka, args.group))
  const owned = members.map(() => [])
  members.forEach((consumer, i) => {
    consumer.on(consumer.events.GROUP_JOIN, event => {
      owned[i] = event.payload.memberAssignment[args.topic] || []
    })
  })
  for (const consumer of members) {
    await consumer.connect()
    await consumer.subscribe({ topic: args.topic, fromBeginning: true })
    await consumer.run({ eachMessage: async () => {} })
  }
  const settled = (indexes, each) => () =>
    indexes.every(i => owned[i].length === each) &&
    new Set(indexes.flatMap(i => owned[i])).size === args.partitions
  await until(settled([0, 1, 2], args.partitions / 3), args.timeoutMs, 'three-way split')
  const first = owned.map(o => [...o].sort((a, b) => a - b))
  await members[2].disconnect()
  await until(settled([0, 1], args.partitions / 2), args.timeoutMs, 'two-way split')
  const after = owned.slice(0, 2).map(o => [...o].sort((a, b) => a - b))
  await Promise.all(members.slice(0, 2).map(consumer => consumer.disconnect()))
  return { first, after }
}

const COMMANDS = { produce, consume, group }

async function main() {
  const [command, json] = process.argv.slice(2)
  const args = JSON.parse(json || '{}')
  if (!COMMANDS[command]) throw new Error(`unknown command ${command}`)
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ error: `${command} took over ${args.timeoutMs} ms` }))
    process.exit(1)
  }, args.timeoutMs + 15000)
  const result = await COMMANDS[command](args)
  clearTimeout(timer)
  process.stdout.write(JSON.stringify(result))
}

main().catch(error => {
  process.stdout.write(JSON.stringify({ error: String((error && error.stack) || error) }))
  process.exit(1)
})
