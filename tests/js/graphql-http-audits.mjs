// Runs the GraphQL-over-HTTP specification's own audit suite (npm graphql-http, serverAudits)
// against an Evently server. Prints one JSON line: every audit with its status and, when it is
// not ok, why. tests/api/graphql_over_http.rs decides which results are acceptable.
import { auditServer } from 'graphql-http';

const url = process.env.EVENTLY_HTTP_URL;
const results = await auditServer({ url });
const audits = await Promise.all(
  results.map(async (result) => {
    const audit = { id: result.id, name: result.name, status: result.status };
    if (result.status !== 'ok') {
      audit.reason = result.reason;
      if (result.response) {
        audit.httpStatus = result.response.status;
        audit.body = await result.response.text().catch(() => null);
      }
    }
    return audit;
  }),
);
console.log(JSON.stringify({ audits }));
