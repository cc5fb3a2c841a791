function scrub(message, metadata) {
  const event = JSON.parse(message.data);
  if (event.event_type === "heartbeat") return null;
  delete event.email;
  event.page_url = (event.page_url || "").split("?")[0];
  return { data: JSON.stringify(event), attributes: Object.assign({}, message.attributes, { scrubbed: "yes" }) };
}
