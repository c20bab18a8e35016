// Structured logs (logfmt on stderr): one line per event, fields as key=value, filtered by level.

/** What every layer logs through (the subnet manager, backends, the daemon): a leaf type, importing nothing. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type Level = keyof typeof LEVELS;

function formatValue(v: unknown): string {
  if (v instanceof Error) v = v.message;
  if (v instanceof Date) v = v.toISOString();
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return /^[A-Za-z0-9_./:@+-]+$/.test(s) ? s : JSON.stringify(s);
}

export function formatLine(level: Level, msg: string, fields: Record<string, unknown> = {}, now = new Date()): string {
  let line = `time=${now.toISOString()} level=${level} msg=${formatValue(msg)}`;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    line += ` ${k}=${formatValue(v)}`;
  }
  return line;
}

export interface LevelLogger extends Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(minLevel: Level = 'info', write: (line: string) => void = (l) => process.stderr.write(l + '\n')): LevelLogger {
  const min = LEVELS[minLevel];
  const at = (level: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] >= min) write(formatLine(level, msg, fields));
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
