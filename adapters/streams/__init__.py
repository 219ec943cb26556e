"""DynamoDB Streams of the requests table: the one record parser and the shard reader.

`adapters.streams.records` turns a stream record (Lambda's `Records[]` or
`GetRecords`) into a `RequestChange` or an `UnreadableRecord`;
`adapters.streams.reader` reads shards through the clients it is given, with
typed errors. The Lambda processor imports only the parser (no botocore at its
cold start on that account); the emulator's poller uses both.
"""
