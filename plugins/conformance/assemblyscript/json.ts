// The AssemblyScript build of the JSON fixture (plugins/conformance/json_test.go):
// the SDK's JSON reader and writer, driven from Go against encoding/json.
//
//   canon   reads the input token by token and writes it back compact;
//           malformed input fails with status invalid_input and the reader's
//           message (json: ... at offset N);
//   config  the config value of the key in the input, read as JSON
//           (ConfigView.getJson) and written back the same way; an absent key
//           fails with "missing key".
//
// Built by build.sh next to this file.
import { config, handle, Result, textOf } from "../../../sdk/assemblyscript/assembly/wasmvisor";
import { JsonReader, JsonToken, JsonWriter } from "../../../sdk/assemblyscript/assembly/json";
export * from "../../../sdk/assemblyscript/assembly/exports";

function canon(input: Uint8Array): Result {
  const r = new JsonReader(input);
  const w = new JsonWriter();
  let t = r.next();
  for (; t != JsonToken.Error && t != JsonToken.Done; t = r.next()) {
    switch (t) {
      case JsonToken.BeginObject: w.beginObject(); break;
      case JsonToken.EndObject: w.endObject(); break;
      case JsonToken.BeginArray: w.beginArray(); break;
      case JsonToken.EndArray: w.endArray(); break;
      case JsonToken.Key: w.copyKey(r); break;
      case JsonToken.String: w.copyString(r); break;
      case JsonToken.Number: w.copyNumber(r); break;
      case JsonToken.True: w.bool(true); break;
      case JsonToken.False: w.bool(false); break;
      case JsonToken.Null: w.null(); break;
    }
  }
  if (t == JsonToken.Error) return r.fail();
  const out = w.finish();
  if (out === null) return Result.invalidInput("json: bad write at offset 0");
  return Result.ok(out);
}

handle("canon", canon);
handle("config", (key: Uint8Array): Result => {
  const v = config().getJson(textOf(key));
  if (v === null) return Result.error("missing key");
  return canon(v);
});
