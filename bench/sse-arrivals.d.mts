export function readArrivals(response: Response, after?: number): Promise<{ texts: number[]; frames: number; replayed: number }>;
